// Splits a template into text and tag tokens, applying jinja2's whitespace rules.
//
// Mirrors jinja2.lexer with the default delimiters: `{{ }}`, `{% %}`, `{# #}`, `{% raw %}`.
//   - newlines are normalized to "\n" and one trailing newline is dropped (keep_trailing_newline=False)
//   - `{%-` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` all after it
//   - trim_blocks: the first "\n" after a block or comment tag is dropped (`+%}` keeps it)
//   - lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag are
//     dropped (`{%+` keeps them); never before `{{`
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/error.h"

namespace ds::jinja {

enum class TokenType {
  kText,
  kVariableBegin,
  kVariableEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInteger,
  kFloat,
  kOperator,
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string value;  // text, name, operator, decoded string literal
  int64_t int_value = 0;
  double float_value = 0.0;
  SourceLocation location;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

// Throws TemplateSyntaxError.
[[nodiscard]] std::vector<Token> tokenize(std::string_view source, const LexerOptions& options);

}  // namespace ds::jinja
