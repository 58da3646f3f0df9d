// Arbitrary tokenizer.json text -> Tokenizer::from_json_text. A malformed file must give a ds::UserError;
// one that loads must tokenize: the input itself (made valid UTF-8), so vocabulary entries, merges and
// added tokens written in the file also appear in the text, is encoded with special tokens read as ids and
// as text; every id must be a token below vocab_size(); adding the post-processor's special tokens must
// only put non-negative ids around them; and the incremental detokenizer must agree with decode (its
// deltas concatenate to decode(ids), each delta valid UTF-8), skipping special tokens or not.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include <spdlog/spdlog.h>

#include "fuzz_check.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/check.h"

namespace {

using ds::tokenizer::EncodeOptions;
using ds::tokenizer::IncrementalDetokenizer;
using ds::tokenizer::TokenId;
using ds::tokenizer::Tokenizer;

// Longer texts only slow the run down: what matters is which tokens they contain.
constexpr size_t kMaxTextBytes = 512;

void check_detokenizer(const Tokenizer& tok, const std::vector<TokenId>& ids, bool skip_special_tokens) {
  const std::string full = tok.decode(ids, skip_special_tokens);
  IncrementalDetokenizer detok(tok, skip_special_tokens);
  std::string streamed;
  for (const TokenId id : ids) {
    const std::string delta = detok.step(id);
    FUZZ_CHECK(ds::tokenizer::is_valid_utf8(delta), "detokenizer delta is not valid UTF-8");
    streamed += delta;
  }
  const std::string rest = detok.finish();
  FUZZ_CHECK(ds::tokenizer::is_valid_utf8(rest), "detokenizer finish() is not valid UTF-8");
  streamed += rest;
  FUZZ_CHECK(streamed == full, "streamed deltas (%zu bytes) != decode(ids) (%zu bytes), skip_special=%d",
             streamed.size(), full.size(), int(skip_special_tokens));
}

}  // namespace

// Loading warns about odd but accepted files (an added token listed under another id); at thousands of
// loads a second that is only noise in the log.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json_text = ds::fuzz::as_text(data, size);
  std::optional<Tokenizer> tok;
  try {
    tok.emplace(Tokenizer::from_json_text(json_text));
  } catch (const ds::UserError&) {
    return 0;
  }

  const std::string text = ds::tokenizer::utf8_lossy(json_text.substr(0, kMaxTextBytes));
  for (const bool split_special : {false, true}) {
    EncodeOptions options;
    options.split_special_tokens = split_special;
    options.add_special_tokens = false;
    std::vector<TokenId> ids;
    try {
      ids = tok->encode(text, options);
    } catch (const ds::UserError&) {
      continue;  // e.g. a character neither in the vocabulary nor covered by an unk token
    }
    // Ids of the text come from the vocabulary and the added tokens: all below vocab_size().
    for (const TokenId id : ids) {
      FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tok->vocab_size(), "id %d outside [0, %zu)", id,
                 tok->vocab_size());
      FUZZ_CHECK(tok->id_to_token(id).has_value(), "id %d of the text has no token", id);
    }
    check_detokenizer(*tok, ids, false);
    check_detokenizer(*tok, ids, true);

    // The post-processor only puts ids around them. Those are whatever the file lists: not necessarily
    // tokens (HF does not check them either; see docs/fuzzing.md), but never negative.
    options.add_special_tokens = true;
    const std::vector<TokenId> with_special = tok->encode(text, options);
    for (const TokenId id : with_special) FUZZ_CHECK(id >= 0, "post-processor added id %d", id);
    FUZZ_CHECK(
        std::search(with_special.begin(), with_special.end(), ids.begin(), ids.end()) != with_special.end(),
        "encode with special tokens does not contain the ids of the text");
    check_detokenizer(*tok, with_special, false);
    check_detokenizer(*tok, with_special, true);
  }
  return 0;
}
