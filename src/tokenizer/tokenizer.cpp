#include "tokenizer/tokenizer.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "tokenizer/byte_level.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/check.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("cannot open {}", path.string()));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json parse_json(std::string_view text, std::string_view file) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
    throw UserError(fmt::format("{} is not valid JSON: {}", file, e.what()));
  }
}

// tokenizer_config.json writes special tokens either as "text" or as {"content": "text", ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  throw UserError(fmt::format("tokenizer_config.json: {}: expected a string or {{\"content\": ...}}", key));
}

std::optional<bool> config_bool(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    throw UserError(fmt::format("tokenizer_config.json: {}: expected true or false", key));
  return it->get<bool>();
}

}  // namespace

TokenizerConfig TokenizerConfig::from_json_text(std::string_view text) {
  const json config = parse_json(text, "tokenizer_config.json");
  if (!config.is_object()) throw UserError("tokenizer_config.json: expected a JSON object");
  TokenizerConfig out;
  out.bos_token = config_token(config, "bos_token");
  out.eos_token = config_token(config, "eos_token");
  out.pad_token = config_token(config, "pad_token");
  out.add_bos_token = config_bool(config, "add_bos_token");
  out.add_eos_token = config_bool(config, "add_eos_token");
  return out;
}

TokenizerConfig TokenizerConfig::from_file(const std::filesystem::path& path) {
  try {
    return from_json_text(read_file(path));
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: {}", path.string(), e.what()));
  }
}

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view tokenizer_json) {
  const json root = parse_json(tokenizer_json, "tokenizer.json");
  jf::expect_object(root, "");
  Tokenizer tok;
  tok.model_ = std::make_unique<BpeModel>(jf::require(root, "model", ""), "model");
  const auto component = [&](const char* key) -> const json& {
    static const json kNull;
    const auto it = root.find(key);
    return it == root.end() ? kNull : *it;
  };
  tok.normalizer_ = make_normalizer(component("normalizer"), "normalizer");
  tok.pre_tokenizer_ = make_pre_tokenizer(component("pre_tokenizer"), "pre_tokenizer");
  tok.post_processor_ = make_post_processor(component("post_processor"), "post_processor");
  tok.decoder_ = make_decoder(component("decoder"), "decoder");

  // Added tokens take their ids the way HF's deserializer does (the "id" field is only checked): an
  // existing added token or vocabulary entry with the same content, otherwise the next free id after the
  // model vocabulary.
  const json& added = component("added_tokens");
  if (!added.is_null() && !added.is_array()) jf::fail("added_tokens", "expected an array");
  auto next_id = static_cast<TokenId>(tok.model_->size());
  std::unordered_map<std::string, TokenId> assigned;  // content -> id, for repeated contents
  std::vector<std::pair<AddedToken, std::string>> tokens;
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string path = jf::element("added_tokens", i);
    const json& entry = added[i];
    AddedToken token;
    token.content = jf::get_string(entry, "content", path);
    token.single_word = jf::get_bool(entry, "single_word", false, path);
    token.lstrip = jf::get_bool(entry, "lstrip", false, path);
    token.rstrip = jf::get_bool(entry, "rstrip", false, path);
    token.special = jf::get_bool(entry, "special", false, path);
    token.normalized = jf::get_bool(entry, "normalized", !token.special, path);
    if (token.content.empty()) continue;
    if (!is_valid_utf8(token.content)) jf::fail(jf::child(path, "content"), "not valid UTF-8");
    if (const auto it = assigned.find(token.content); it != assigned.end()) {
      token.id = it->second;
    } else if (const auto vocab_id = tok.model_->token_to_id(token.content)) {
      token.id = *vocab_id;
    } else {
      token.id = next_id++;
    }
    assigned[token.content] = token.id;
    if (entry.contains("id") && entry["id"].is_number_integer() && entry["id"].get<int64_t>() != token.id) {
      spdlog::warn(
          "tokenizer.json: added token {:?} is listed with id {} but gets id {} (as in HF tokenizers)",
          token.content, entry["id"].get<int64_t>(), token.id);
    }
    std::string normalized = token.content;
    if (token.normalized && tok.normalizer_ != nullptr) tok.normalizer_->normalize(normalized);
    tokens.emplace_back(std::move(token), std::move(normalized));
  }
  tok.added_.add_all(std::move(tokens));

  size_t size = tok.model_->size();
  for (const auto& [token, id] : tok.model_->vocab()) size = std::max(size, static_cast<size_t>(id) + 1);
  for (const AddedToken& t : tok.added_.tokens()) size = std::max(size, static_cast<size_t>(t.id) + 1);
  tok.vocab_size_ = size;
  return tok;
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  const std::string text = read_file(tokenizer_json);
  try {
    return from_json_text(text);
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: {}", tokenizer_json.string(), e.what()));
  }
}

Tokenizer Tokenizer::from_dir(const std::filesystem::path& dir) {
  Tokenizer tok = from_file(dir / "tokenizer.json");
  const auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    const TokenizerConfig config = TokenizerConfig::from_file(config_path);
    try {
      tok.apply_config(config);
    } catch (const UserError& e) {
      throw UserError(fmt::format("{}: {}", config_path.string(), e.what()));
    }
  }
  return tok;
}

void Tokenizer::apply_config(const TokenizerConfig& config) {
  const auto resolve = [&](const std::optional<std::string>& token,
                           const char* key) -> std::optional<TokenId> {
    if (!token) return std::nullopt;
    const auto id = token_to_id(*token);
    if (!id) throw UserError(fmt::format("{} {:?} is not in the vocabulary", key, *token));
    return id;
  };
  bos_token_id_ = resolve(config.bos_token, "bos_token");
  eos_token_id_ = resolve(config.eos_token, "eos_token");
  if (config.add_bos_token || config.add_eos_token) {
    std::vector<TokenId> prefix;
    std::vector<TokenId> suffix;
    if (config.add_bos_token.value_or(false)) {
      if (!bos_token_id_) throw UserError("add_bos_token is true but bos_token is not set");
      prefix.push_back(*bos_token_id_);
    }
    if (config.add_eos_token.value_or(false)) {
      if (!eos_token_id_) throw UserError("add_eos_token is true but eos_token is not set");
      suffix.push_back(*eos_token_id_);
    }
    post_processor_ = make_bos_eos_processor(std::move(prefix), std::move(suffix));
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  EncodeOptions options;
  options.add_special_tokens = add_special_tokens;
  return encode(text, options);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  if (!is_valid_utf8(text)) throw UserError("text to tokenize is not valid UTF-8");
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<TextSegment> raw_segments;
  added_.split(text, /*normalized_tokens=*/false, options.split_special_tokens, raw_segments);
  std::vector<TextSegment> segments;
  for (TextSegment& raw : raw_segments) {
    if (raw.token) {
      ids.push_back(*raw.token);
      continue;
    }
    if (normalizer_ != nullptr) normalizer_->normalize(raw.text);
    segments.clear();
    added_.split(raw.text, /*normalized_tokens=*/true, options.split_special_tokens, segments);
    for (const TextSegment& segment : segments) {
      if (segment.token) {
        ids.push_back(*segment.token);
      } else {
        encode_text(segment.text, ids);
      }
    }
  }
  if (post_processor_ != nullptr) post_processor_->process(ids, options.add_special_tokens);
  return ids;
}

void Tokenizer::encode_text(std::string_view text, std::vector<TokenId>& ids) const {
  if (text.empty()) return;
  if (pre_tokenizer_ == nullptr) {
    model_->tokenize(text, ids);
    return;
  }
  PreTokenizedString pre(text);
  pre_tokenizer_->pre_tokenize(pre);
  for (const std::string_view piece : pre.pieces) model_->tokenize(piece, ids);
}

const std::string* Tokenizer::token_for_decode(TokenId id, bool skip_special_tokens) const {
  const std::string* token = added_.decoded_content(id);
  if (token == nullptr) token = model_->id_to_token(id);
  if (token == nullptr) return nullptr;
  if (skip_special_tokens && added_.is_special_content(*token)) return nullptr;
  return token;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  if (has_byte_level_decoder()) {
    std::string bytes;
    for (const TokenId id : ids) append_token_bytes(id, skip_special_tokens, bytes);
    return utf8_lossy(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const TokenId id : ids) {
    if (const std::string* token = token_for_decode(id, skip_special_tokens)) tokens.push_back(*token);
  }
  std::string text;
  if (decoder_ != nullptr) {
    decoder_->decode_chain(tokens);
    for (const std::string& part : tokens) text += part;
    return text;
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) text += ' ';
    text += tokens[i];
  }
  return text;
}

bool Tokenizer::has_byte_level_decoder() const {
  return decoder_ != nullptr && decoder_->is_byte_level();
}

void Tokenizer::append_token_bytes(TokenId id, bool skip_special_tokens, std::string& bytes) const {
  DS_CHECK(has_byte_level_decoder(), "append_token_bytes needs a ByteLevel decoder");
  if (const std::string* token = token_for_decode(id, skip_special_tokens)) {
    ByteLevelAlphabet::get().decode_token(*token, bytes);
  }
}

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto id = added_.find_by_content(token)) return id;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(TokenId id) const {
  if (const std::string* token = token_for_decode(id, false)) return *token;
  return std::nullopt;
}

bool Tokenizer::is_special_token(TokenId id) const {
  const AddedToken* token = added_.find_by_id(id);
  return token != nullptr && token->special;
}

}  // namespace ds::tokenizer
