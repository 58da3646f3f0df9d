// HuggingFace-compatible tokenizer loaded from tokenizer.json (+ tokenizer_config.json), producing the
// same ids as the `tokenizers` library for byte-level BPE models such as DeepSeek-V3's.
//
// encode: added tokens are cut out of the raw text -> normalizer -> normalized added tokens cut out ->
// pre-tokenizer -> BPE per piece -> post-processor (BOS/EOS when add_special_tokens).
// decode: ids -> token strings (special ones optionally skipped) -> decoder.
//
// A Tokenizer is immutable after loading; encode/decode may be called from several threads at once.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"

namespace ds::tokenizer {

class Normalizer;
class PreTokenizer;
class PostProcessor;
class Decoder;

// The parts of tokenizer_config.json that change tokenization.
struct TokenizerConfig {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  // When present, they replace the post-processor by [bos] A [eos] as transformers does for
  // LlamaTokenizerFast (the class DeepSeek-V3 names).
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;

  // Throws ds::UserError naming the field when the file is malformed.
  static TokenizerConfig from_json_text(std::string_view text);
  static TokenizerConfig from_file(const std::filesystem::path& path);
};

struct EncodeOptions {
  // Add what the post-processor adds (DeepSeek-V3: <｜begin▁of▁sentence｜> in front).
  bool add_special_tokens = true;
  // Special tokens written in the text are encoded as plain text instead of becoming their id
  // (HF's encode_special_tokens). Use for untrusted text that must not inject control tokens.
  bool split_special_tokens = false;
};

class Tokenizer {
 public:
  // All loaders throw ds::UserError naming the file and field when the input is malformed or uses a
  // component this implementation does not support.
  static Tokenizer from_json_text(std::string_view tokenizer_json);
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // A checkpoint directory: tokenizer.json, plus tokenizer_config.json when present.
  static Tokenizer from_dir(const std::filesystem::path& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Throws ds::UserError when `text` is not valid UTF-8.
  [[nodiscard]] std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = true) const;
  [[nodiscard]] std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options) const;

  // Ids without a token are skipped, as HF does. Ill-formed UTF-8 from byte tokens becomes U+FFFD.
  [[nodiscard]] std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  [[nodiscard]] std::optional<TokenId> token_to_id(std::string_view token) const;
  [[nodiscard]] std::optional<std::string> id_to_token(TokenId id) const;
  // One past the largest id of the vocabulary and the added tokens.
  [[nodiscard]] size_t vocab_size() const { return vocab_size_; }
  [[nodiscard]] bool is_special_token(TokenId id) const;
  [[nodiscard]] std::optional<TokenId> bos_token_id() const { return bos_token_id_; }
  [[nodiscard]] std::optional<TokenId> eos_token_id() const { return eos_token_id_; }
  [[nodiscard]] const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }

  // Replaces BOS/EOS handling by the one tokenizer_config.json asks for (from_dir calls this).
  void apply_config(const TokenizerConfig& config);

  // For the incremental detokenizer: whether decode() is byte concatenation + utf8_lossy, and the bytes
  // one id contributes (nothing for unknown ids and, when skipping, special tokens).
  [[nodiscard]] bool has_byte_level_decoder() const;
  void append_token_bytes(TokenId id, bool skip_special_tokens, std::string& bytes) const;

 private:
  Tokenizer();
  // The string decode() sees for an id: added token content or vocabulary entry; nullptr if none, or if
  // it is special and skip_special_tokens.
  [[nodiscard]] const std::string* token_for_decode(TokenId id, bool skip_special_tokens) const;
  void encode_text(std::string_view text, std::vector<TokenId>& ids) const;

  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  size_t vocab_size_ = 0;
  std::optional<TokenId> bos_token_id_;
  std::optional<TokenId> eos_token_id_;
};

}  // namespace ds::tokenizer
