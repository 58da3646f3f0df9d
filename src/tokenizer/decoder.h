// Decoders of tokenizer.json: how token strings become text. Supported: ByteLevel and Sequence of
// ByteLevel. ByteLevel maps each token's code points back to bytes (a token with a code point outside the
// byte alphabet, such as an added "<｜User｜>", keeps its own UTF-8 bytes), concatenates them, and replaces
// ill-formed UTF-8 with U+FFFD (Rust's from_utf8_lossy).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ds::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // HF's decode_chain: token strings in, strings out (concatenated by the caller).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // True when decoding is exactly utf8_lossy(concat of ByteLevelAlphabet::decode_token per token): the
  // incremental detokenizer then works on bytes.
  [[nodiscard]] virtual bool is_byte_level() const { return false; }
};

// Returns nullptr for JSON null (HF then joins the tokens with spaces).
[[nodiscard]] std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const std::string& path);

}  // namespace ds::tokenizer
