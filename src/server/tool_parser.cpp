#include "server/tool_parser.h"

#include <nlohmann/json.hpp>

#include "server/reasoning_parser.h"

namespace ds::server {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

bool ToolCallParser::parse_call(std::string_view body, ParsedToolCall& call) {
  const size_t sep = body.find(kSep);
  if (sep == std::string_view::npos) return false;
  // The type before <｜tool▁sep｜> is "function" in every DeepSeek output; vLLM does not check it either.
  std::string_view rest = body.substr(sep + kSep.size());
  const size_t newline = rest.find('\n');
  if (newline == std::string_view::npos) return false;
  const std::string_view name = trim(rest.substr(0, newline));
  if (name.empty()) return false;
  std::string_view args = trim(rest.substr(newline + 1));
  if (args.starts_with("```")) {
    args.remove_prefix(3);
    if (args.starts_with("json")) args.remove_prefix(4);
    if (!args.ends_with("```")) return false;
    args.remove_suffix(3);
    args = trim(args);
  }
  const auto parsed = nlohmann::json::parse(args, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return false;  // also the "discarded" value of a parse error
  call.name = std::string(name);
  call.arguments = std::string(args);
  return true;
}

ToolParseDelta ToolCallParser::feed(std::string_view text) {
  ToolParseDelta out;
  buffer_.append(text);
  run(out);
  return out;
}

void ToolCallParser::to_raw(ToolParseDelta& out) {
  out.content += section_raw_;
  out.content += buffer_;
  section_raw_.clear();
  buffer_.clear();
  state_ = State::kRaw;
}

void ToolCallParser::run(ToolParseDelta& out) {
  for (;;) {
    switch (state_) {
      case State::kText: {
        const size_t at = buffer_.find(kCallsBegin);
        if (at == std::string::npos) {
          const size_t keep = partial_marker_suffix(buffer_, {kCallsBegin});
          out.content.append(buffer_, 0, buffer_.size() - keep);
          buffer_.erase(0, buffer_.size() - keep);
          return;
        }
        out.content.append(buffer_, 0, at);
        buffer_.erase(0, at + kCallsBegin.size());
        section_raw_ = kCallsBegin;
        calls_in_section_ = 0;
        state_ = State::kSection;
        break;
      }
      case State::kSection: {
        size_t space = 0;
        while (space < buffer_.size() && is_space(buffer_[space])) ++space;
        section_raw_.append(buffer_, 0, space);
        buffer_.erase(0, space);
        if (buffer_.empty()) return;
        if (buffer_.starts_with(kCallBegin)) {
          section_raw_ += kCallBegin;
          buffer_.erase(0, kCallBegin.size());
          scanned_ = 0;
          state_ = State::kCall;
        } else if (buffer_.starts_with(kCallsEnd)) {
          buffer_.erase(0, kCallsEnd.size());
          section_raw_.clear();
          state_ = State::kText;
        } else if (kCallBegin.starts_with(buffer_) || kCallsEnd.starts_with(buffer_)) {
          return;  // a marker still arriving
        } else {
          to_raw(out);
        }
        break;
      }
      case State::kCall: {
        const size_t from = scanned_ >= kCallEnd.size() ? scanned_ - (kCallEnd.size() - 1) : 0;
        const size_t at = buffer_.find(kCallEnd, from);
        if (at == std::string::npos) {
          scanned_ = buffer_.size();
          return;
        }
        ParsedToolCall call;
        if (!parse_call(std::string_view(buffer_).substr(0, at), call)) {
          to_raw(out);
          break;
        }
        out.calls.push_back(std::move(call));
        ++calls_in_section_;
        ++num_calls_;
        buffer_.erase(0, at + kCallEnd.size());
        section_raw_.clear();
        state_ = State::kSection;
        break;
      }
      case State::kRaw:
        out.content += buffer_;
        buffer_.clear();
        return;
    }
  }
}

ToolParseDelta ToolCallParser::finish() {
  ToolParseDelta out;
  switch (state_) {
    case State::kText:
    case State::kRaw:
      out.content = std::move(buffer_);
      break;
    case State::kSection:
      // Complete calls and then the end of the output: the section's end marker is optional.
      if (buffer_.empty() && calls_in_section_ > 0) break;
      to_raw(out);
      break;
    case State::kCall:
      to_raw(out);
      break;
  }
  buffer_.clear();
  section_raw_.clear();
  state_ = State::kRaw;
  return out;
}

bool is_known_tool_call_parser(std::string_view name) {
  return name == "deepseek_v3";
}

}  // namespace ds::server
