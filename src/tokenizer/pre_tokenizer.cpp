#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Segment {
  size_t start;
  size_t end;
  bool is_match;
};

// Applies `split` to every piece, collecting the results in place of the input.
template <typename SplitOne>
void split_each(std::vector<std::string>& pieces, SplitOne&& split) {
  std::vector<std::string> out;
  out.reserve(pieces.size() * 2);
  for (const std::string& piece : pieces) split(piece, out);
  pieces = std::move(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<std::string>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void pre_tokenize(std::vector<std::string>& pieces) const override {
    std::vector<RegexMatch> matches;
    split_each(pieces, [&](const std::string& piece, std::vector<std::string>& out) {
      matches.clear();
      regex_->find_all(piece, matches);
      split_at_matches(piece, matches, behavior_, invert_, out);
    });
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel's GPT-2 pattern");
  }

  void pre_tokenize(std::vector<std::string>& pieces) const override {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    std::vector<std::string> out;
    out.reserve(pieces.size());
    std::vector<RegexMatch> matches;
    std::vector<std::string> parts;
    for (std::string& piece : pieces) {
      if (add_prefix_space_ && (piece.empty() || piece.front() != ' ')) piece.insert(piece.begin(), ' ');
      parts.clear();
      if (regex_ != nullptr) {
        matches.clear();
        regex_->find_all(piece, matches);
        split_at_matches(piece, matches, SplitBehavior::kIsolated, false, parts);
      } else if (!piece.empty()) {
        parts.push_back(std::move(piece));
      }
      for (const std::string& part : parts) {
        std::string mapped;
        mapped.reserve(part.size() * 2);
        alphabet.encode(part, mapped);
        out.push_back(std::move(mapped));
      }
    }
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

SplitBehavior parse_behavior(const json& config, const std::string& path) {
  const std::string name = jf::get_string(config, "behavior", path);
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  jf::fail(jf::child(path, "behavior"),
           fmt::format("unknown split behavior {:?} (expected Removed, Isolated, MergedWithPrevious, "
                       "MergedWithNext or Contiguous)",
                       name));
}

std::unique_ptr<PreTokenizer> make_split(const json& config, const std::string& path) {
  const json& pattern = jf::require(config, "pattern", path);
  const std::string pattern_path = jf::child(path, "pattern");
  jf::expect_object(pattern, pattern_path);
  std::unique_ptr<Regex> regex;
  if (pattern.contains("Regex")) {
    const std::string source = jf::get_string(pattern, "Regex", pattern_path);
    regex = std::make_unique<Regex>(source, jf::child(pattern_path, "Regex"));
  } else if (pattern.contains("String")) {
    const std::string source = jf::get_string(pattern, "String", pattern_path);
    if (source.empty()) jf::fail(jf::child(pattern_path, "String"), "an empty split string matches nothing");
    regex = std::make_unique<Regex>(source, jf::child(pattern_path, "String"), /*literal=*/true);
  } else {
    jf::fail(pattern_path, "expected {\"Regex\": ...} or {\"String\": ...}");
  }
  return std::make_unique<SplitPreTokenizer>(std::move(regex), parse_behavior(config, path),
                                             jf::get_bool(config, "invert", false, path));
}

std::unique_ptr<PreTokenizer> make_digits(const json& config, const std::string& path) {
  const bool individual = jf::get_bool(config, "individual_digits", false, path);
  // Rust's char::is_numeric is the N general category.
  return std::make_unique<SplitPreTokenizer>(
      std::make_unique<Regex>("\\p{N}", path),
      individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
}

}  // namespace

void split_at_matches(std::string_view text, const std::vector<RegexMatch>& matches, SplitBehavior behavior,
                      bool invert, std::vector<std::string>& out) {
  if (text.empty()) return;
  // The text as alternating gaps and matches, in order (HF's Pattern::find_matches).
  std::vector<Segment> segments;
  segments.reserve(matches.size() * 2 + 1);
  size_t previous = 0;
  for (const RegexMatch& m : matches) {
    if (previous != m.start) segments.push_back({previous, m.start, invert});
    segments.push_back({m.start, m.end, !invert});
    previous = m.end;
  }
  if (previous != text.size()) segments.push_back({previous, text.size(), invert});

  std::vector<Segment> kept;
  kept.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      kept = segments;
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) kept.push_back(s);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Walk right to left: a match joins the segment after it unless that one was a match too.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().start = it->start;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const Segment& s : kept) {
    if (s.end > s.start) out.emplace_back(text.substr(s.start, s.end - s.start));
  }
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& config, const std::string& path) {
  if (config.is_null()) return nullptr;
  const std::string type = jf::type_of(config, path);
  if (type == "Sequence") {
    const json& list = jf::require(config, "pretokenizers", path);
    const std::string list_path = jf::child(path, "pretokenizers");
    if (!list.is_array()) jf::fail(list_path, "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_pre_tokenizer(list[i], jf::element(list_path, i));
      if (step != nullptr) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") return make_split(config, path);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(jf::get_bool(config, "add_prefix_space", true, path),
                                                   jf::get_bool(config, "use_regex", true, path));
  }
  if (type == "Digits") return make_digits(config, path);
  jf::fail(jf::child(path, "type"),
           fmt::format("pre-tokenizer {:?} is not supported (supported: Sequence, Split, ByteLevel, Digits)",
                       type));
}

}  // namespace ds::tokenizer
