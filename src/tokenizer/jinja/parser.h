// Builds the syntax tree from tokens, with jinja2's grammar and operator precedence:
//   ternary < or < and < not < comparisons (== != < <= > >= in, not in) < + - < ~ < * / // % < **
//   < unary - + < postfix (. [] ()) < filters (|) and tests (is) which bind to the unary operand.
#pragma once

#include <string_view>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

namespace ds::jinja {

struct ParseOptions {
  LexerOptions lexer;
  int max_nesting_depth = 256;  // nested blocks and expressions; deeper is a syntax error
};

// Throws TemplateSyntaxError, also for a filter or test name that does not exist (outside an `if`,
// where jinja2 reports it only when reached).
[[nodiscard]] Body parse_template(std::string_view source, const ParseOptions& options);

void check_filters_and_tests(const Body& body);

}  // namespace ds::jinja
