// Arbitrary chat template source -> ds::ChatTemplate (the Jinja parser); when it parses, it is rendered
// over a fixed conversation (system prompt, tool call, tool output, <think> content, tools) as the server
// would, with and without the generation prompt. Parse and render failures must be jinja::TemplateError
// (a ds::UserError) naming a line and column inside the source; runaway templates must be stopped by the
// sandbox limits, which are set lower than the defaults here so a run spends its time on new inputs
// rather than on legitimately long renders (the limit checks themselves are the same code).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/error.h"

namespace {

using nlohmann::ordered_json;

ds::jinja::TemplateOptions fuzz_options() {
  ds::jinja::TemplateOptions options;
  options.limits.max_loop_iterations = 10'000;
  options.limits.max_recursion_depth = 50;
  options.limits.max_output_bytes = 64u << 10;
  options.limits.max_total_string_bytes = 4u << 20;
  options.clock = [] {
    std::tm t{};
    t.tm_year = 2025 - 1900;
    t.tm_mon = 0;
    t.tm_mday = 2;
    return t;
  };
  return options;
}

const ordered_json& special_tokens() {
  static const ordered_json tokens = {{"bos_token", "<｜begin▁of▁sentence｜>"},
                                      {"eos_token", {{"content", "<｜end▁of▁sentence｜>"}}},
                                      {"pad_token", nullptr},
                                      {"add_bos_token", true}};
  return tokens;
}

ds::ChatTemplateInputs conversation(bool add_generation_prompt) {
  ds::ChatTemplateInputs in;
  in.messages = ordered_json::parse(R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in 東京? 🌧"},
    {"role": "assistant", "content": "<think>need a tool</think>", "tool_calls": [
      {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Tokyo\"}"}}]},
    {"role": "tool", "content": "{\"temp\": 7}"},
    {"role": "assistant", "content": "7°C."},
    {"role": "user", "content": ""}
  ])");
  in.tools = ordered_json::parse(R"([{"type": "function", "function": {"name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  in.add_generation_prompt = add_generation_prompt;
  in.kwargs = {{"thinking", true}};
  return in;
}

// Lines and columns are 1-based and inside the (newline-normalized) source; an error at the very end
// (an unclosed block) points one past the last character.
void check_location(const ds::jinja::TemplateError& e, std::string_view source) {
  const auto lines = static_cast<int>(std::count(source.begin(), source.end(), '\n') +
                                      std::count(source.begin(), source.end(), '\r') + 1);
  FUZZ_CHECK(e.line() >= 1 && e.line() <= lines && e.column() >= 1 &&
                 static_cast<size_t>(e.column()) <= source.size() + 1,
             "error location %d:%d outside the source (%d lines, %zu bytes): %s", e.line(), e.column(), lines,
             source.size(), e.what());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  std::optional<ds::ChatTemplate> chat;
  try {
    chat.emplace(source, special_tokens(), fuzz_options());
  } catch (const ds::jinja::TemplateError& e) {
    check_location(e, source);
    return 0;
  }
  // ChatTemplateError (a UserError) is only for the special tokens, which are fixed and valid here.
  for (const bool add_generation_prompt : {false, true}) {
    try {
      const std::string text = chat->apply(conversation(add_generation_prompt));
      FUZZ_CHECK(text.size() <= fuzz_options().limits.max_output_bytes, "output of %zu bytes past the limit",
                 text.size());
    } catch (const ds::jinja::TemplateError& e) {
      check_location(e, source);
    }
  }
  return 0;
}
