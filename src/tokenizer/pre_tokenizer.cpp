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

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(PreTokenizedString& text) const override {
    for (const auto& step : steps_) step->pre_tokenize(text);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void pre_tokenize(PreTokenizedString& text) const override {
    std::vector<std::string_view> out;
    out.reserve(text.pieces.size() * 4);
    std::vector<RegexMatch> matches;
    for (const std::string_view piece : text.pieces) {
      matches.clear();
      regex_->find_all(piece, matches);
      split_at_matches(piece, matches, behavior_, invert_, out);
    }
    text.pieces = std::move(out);
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

  void pre_tokenize(PreTokenizedString& text) const override {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    std::vector<std::string_view> out;
    out.reserve(text.pieces.size());
    std::vector<RegexMatch> matches;
    std::vector<std::string_view> parts;
    for (std::string_view piece : text.pieces) {
      if (add_prefix_space_ && piece.front() != ' ') {
        std::string spaced(1, ' ');
        spaced.append(piece);
        piece = text.store(std::move(spaced));
      }
      parts.clear();
      if (regex_ != nullptr) {
        matches.clear();
        regex_->find_all(piece, matches);
        split_at_matches(piece, matches, SplitBehavior::kIsolated, false, parts);
      } else {
        parts.push_back(piece);
      }
      // All mapped parts of one piece share one stored string.
      size_t total = 0;
      for (const std::string_view part : parts) total += part.size();
      std::string mapped;
      mapped.reserve(total * 2);
      std::vector<size_t> ends;
      ends.reserve(parts.size());
      for (const std::string_view part : parts) {
        alphabet.encode(part, mapped);
        ends.push_back(mapped.size());
      }
      const std::string_view stored = text.store(std::move(mapped));
      size_t start = 0;
      for (const size_t end : ends) {
        out.push_back(stored.substr(start, end - start));
        start = end;
      }
    }
    text.pieces = std::move(out);
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
                      bool invert, std::vector<std::string_view>& out) {
  if (text.empty()) return;
  // The text as alternating gaps and matches, in order (HF's Pattern::find_matches).
  thread_local std::vector<Segment> segments;
  segments.clear();
  size_t previous = 0;
  for (const RegexMatch& m : matches) {
    if (previous != m.start) segments.push_back({previous, m.start, invert});
    segments.push_back({m.start, m.end, !invert});
    previous = m.end;
  }
  if (previous != text.size()) segments.push_back({previous, text.size(), invert});

  const size_t first = out.size();
  auto emit = [&](size_t start, size_t end) { out.push_back(text.substr(start, end - start)); };
  // Extends the last emitted piece (of this text) to `end` / back to `start`.
  auto extend_last = [&](size_t end) {
    std::string_view& last = out.back();
    last = std::string_view(last.data(), static_cast<size_t>(text.data() + end - last.data()));
  };
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) emit(s.start, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) emit(s.start, s.end);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && out.size() > first) {
          extend_last(s.end);
        } else {
          emit(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && out.size() > first) {
          extend_last(s.end);
        } else {
          emit(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Walk right to left: a match joins the segment after it unless that one was a match too.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && out.size() > first) {
          std::string_view& last = out.back();
          last = std::string_view(text.data() + it->start,
                                  static_cast<size_t>(last.data() + last.size() - (text.data() + it->start)));
        } else {
          emit(it->start, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
      break;
  }
  // Removed segments never reach `out`; the others are non-empty by construction.
}

std::vector<std::string> PreTokenizer::pre_tokenize_str(std::string_view text) const {
  PreTokenizedString pre(text);
  pre_tokenize(pre);
  return {pre.pieces.begin(), pre.pieces.end()};
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
