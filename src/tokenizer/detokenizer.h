// Incremental detokenizer for streaming: fed the generated ids one at a time, it returns text deltas
// whose concatenation is exactly tokenizer.decode(all ids). A delta never ends inside a UTF-8 character:
// bytes of an unfinished character are held back until a later token completes it, and finish() turns
// whatever is still unfinished into U+FFFD, as a full decode would.
//
// With a ByteLevel decoder this works on bytes: decode is utf8_lossy(concatenated token bytes), and
// utf8_lossy(A + B) == utf8_lossy(A) + utf8_lossy(B) whenever A does not end in an unfinished character.
// Other decoders fall back to re-decoding the ids and emitting the new suffix.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ds::tokenizer {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive the detokenizer. `keep_special` lists special tokens that are decoded even when
  // skip_special_tokens is set (marker tokens a parser of the text needs).
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                         std::vector<TokenId> keep_special = {});

  // Text that became final with this id (possibly empty). Always valid UTF-8.
  [[nodiscard]] std::string step(TokenId id);
  // The rest: held-back bytes of an unfinished character become U+FFFD. Call once, at the end.
  [[nodiscard]] std::string finish();

  // Bytes held back because they do not form a whole character yet.
  [[nodiscard]] size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<TokenId> keep_special_;
  bool byte_level_;
  std::string pending_;       // byte-level: bytes not emitted yet (an unfinished character)
  std::vector<TokenId> ids_;  // fallback: every id so far (but the special ones skipped)
  size_t emitted_ = 0;        // fallback: bytes of decode(ids_) already emitted
};

}  // namespace ds::tokenizer
