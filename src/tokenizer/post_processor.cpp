#include "tokenizer/post_processor.h"

#include <limits>
#include <utility>

#include "tokenizer/json_fields.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

// A flattened single-sequence template: ids before the sequence, and ids after it.
class TemplatePostProcessor final : public PostProcessor {
 public:
  TemplatePostProcessor(std::vector<TokenId> prefix, std::vector<TokenId> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}

  void process(std::vector<TokenId>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }

 private:
  std::vector<TokenId> prefix_;
  std::vector<TokenId> suffix_;
};

class NoOpPostProcessor final : public PostProcessor {
 public:
  void process(std::vector<TokenId>&, bool) const override {}
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void process(std::vector<TokenId>& ids, bool add_special_tokens) const override {
    for (const auto& step : steps_) step->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// An id as a JSON value: an integer in [0, INT32_MAX]. Anything else used to be cast to TokenId as is, so
// 4294967296 became id 0 and -1 went out of encode() as a negative id.
bool is_token_id(const json& id) {
  return id.is_number_integer() && id.get<int64_t>() >= 0 &&
         id.get<int64_t>() <= std::numeric_limits<TokenId>::max();
}

// One template piece: the sequence ("$A", {"Sequence": {"id": "A"}}) or a special token name.
struct Piece {
  bool is_sequence = false;
  std::string special_token;
};

Piece parse_piece(const json& piece, const std::string& path) {
  if (piece.is_string()) {
    // "$A", "$B", "$", "$0", "[CLS]", optionally followed by ":type_id".
    std::string text = piece.get<std::string>();
    if (const size_t colon = text.find(':'); colon != std::string::npos) text.resize(colon);
    if (text.starts_with("$")) {
      if (text == "$B" || text == "$b") jf::fail(path, "the single-sequence template cannot use sequence B");
      return {true, {}};
    }
    return {false, text};
  }
  jf::expect_object(piece, path);
  if (piece.contains("Sequence")) {
    const std::string id = jf::get_string(piece["Sequence"], "id", jf::child(path, "Sequence"));
    if (id != "A") jf::fail(jf::child(path, "Sequence.id"), "the single-sequence template can only use A");
    return {true, {}};
  }
  if (piece.contains("SpecialToken")) {
    return {false, jf::get_string(piece["SpecialToken"], "id", jf::child(path, "SpecialToken"))};
  }
  jf::fail(path, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
}

std::unique_ptr<PostProcessor> make_template(const json& config, const std::string& path) {
  const json& single = jf::require(config, "single", path);
  const std::string single_path = jf::child(path, "single");
  const json& special_tokens = config.contains("special_tokens") ? config["special_tokens"] : json::object();
  const std::string specials_path = jf::child(path, "special_tokens");
  jf::expect_object(special_tokens, specials_path);

  json pieces = single;
  if (single.is_string()) {
    pieces = json::array();
    const std::string text = single.get<std::string>();
    size_t start = 0;
    while (start <= text.size()) {
      const size_t space = std::min(text.find(' ', start), text.size());
      if (space > start) pieces.push_back(text.substr(start, space - start));
      start = space + 1;
    }
  }
  if (!pieces.is_array()) jf::fail(single_path, "expected an array of template pieces");

  std::vector<TokenId> prefix;
  std::vector<TokenId> suffix;
  bool seen_sequence = false;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string piece_path = jf::element(single_path, i);
    const Piece piece = parse_piece(pieces[i], piece_path);
    if (piece.is_sequence) {
      if (seen_sequence) jf::fail(piece_path, "the single-sequence template uses the sequence twice");
      seen_sequence = true;
      continue;
    }
    const auto it = special_tokens.find(piece.special_token);
    if (it == special_tokens.end()) {
      jf::fail(piece_path,
               fmt::format("special token {:?} is not listed in {}", piece.special_token, specials_path));
    }
    const std::string token_path = jf::child(specials_path, piece.special_token);
    const json& ids = jf::require(*it, "ids", token_path);
    if (!ids.is_array()) jf::fail(jf::child(token_path, "ids"), "expected an array of ids");
    for (const json& id : ids) {
      if (!is_token_id(id)) jf::fail(jf::child(token_path, "ids"), "expected non-negative integer ids");
      (seen_sequence ? suffix : prefix).push_back(static_cast<TokenId>(id.get<int64_t>()));
    }
  }
  if (!seen_sequence) jf::fail(single_path, "the template never places the sequence ($A)");
  return std::make_unique<TemplatePostProcessor>(std::move(prefix), std::move(suffix));
}

TokenId parse_token_pair(const json& config, std::string_view key, const std::string& path) {
  const json& pair = jf::require(config, key, path);
  if (!pair.is_array() || pair.size() != 2 || !is_token_id(pair[1])) {
    jf::fail(jf::child(path, key), "expected [\"token\", id] with a non-negative integer id");
  }
  return static_cast<TokenId>(pair[1].get<int64_t>());
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& config, const std::string& path) {
  if (config.is_null()) return nullptr;
  const std::string type = jf::type_of(config, path);
  if (type == "TemplateProcessing") return make_template(config, path);
  if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return std::make_unique<TemplatePostProcessor>(
        std::vector<TokenId>{parse_token_pair(config, "cls", path)},
        std::vector<TokenId>{parse_token_pair(config, "sep", path)});
  }
  if (type == "Sequence") {
    const json& list = jf::require(config, "processors", path);
    const std::string list_path = jf::child(path, "processors");
    if (!list.is_array()) jf::fail(list_path, "expected an array");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto step = make_post_processor(list[i], jf::element(list_path, i)))
        steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  jf::fail(jf::child(path, "type"),
           fmt::format("post-processor {:?} is not supported (supported: TemplateProcessing, ByteLevel, "
                       "BertProcessing, RobertaProcessing, Sequence)",
                       type));
}

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<TokenId> prefix,
                                                      std::vector<TokenId> suffix) {
  return std::make_unique<TemplatePostProcessor>(std::move(prefix), std::move(suffix));
}

}  // namespace ds::tokenizer
