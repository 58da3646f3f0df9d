// The parser's internals, shared by parser.cpp (statements) and parser_expr.cpp (expressions and
// assignment targets).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/parser.h"

namespace ds::jinja::detail {

// How jinja2 names a token in its error messages.
std::string describe(const Token& t);

class TokenStream {
 public:
  TokenStream(std::vector<Token> tokens, const ParseOptions& options)
      : tokens_(std::move(tokens)), opt_(options) {}

  const Token& current() const { return tokens_[pos_]; }
  const Token& look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool is_op(std::string_view op) const {
    return current().type == TokenType::kOperator && current().value == op;
  }
  bool is_name(std::string_view name) const {
    return current().type == TokenType::kName && current().value == name;
  }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  const Token& expect_op(std::string_view op) {
    if (!is_op(op)) fail(fmt::format("expected token '{}', got '{}'", op, describe(current())));
    return next();
  }
  const Token& expect_type(TokenType type, std::string_view what) {
    if (current().type != type) fail(fmt::format("expected token '{}', got '{}'", what, describe(current())));
    return next();
  }
  const Token& expect_name() { return expect_type(TokenType::kName, "name"); }
  void expect_name(std::string_view name) {
    if (!is_name(name)) fail(fmt::format("expected token '{}', got '{}'", name, describe(current())));
    next();
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw TemplateSyntaxError(message, current().location);
  }
  [[noreturn]] void fail_at(const std::string& message, SourceLocation location) const {
    throw TemplateSyntaxError(message, location);
  }

  class DepthGuard {
   public:
    explicit DepthGuard(TokenStream& p) : p_(p) {
      if (++p_.depth_ > p_.opt_.max_nesting_depth) p_.fail("template nested too deeply");
    }
    ~DepthGuard() { --p_.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    TokenStream& p_;
  };

 protected:
  std::vector<Token> tokens_;
  ParseOptions opt_;
  size_t pos_ = 0;
  int depth_ = 0;
};

class ExpressionParser : public TokenStream {
 public:
  using TokenStream::TokenStream;

  bool is_tuple_end(std::initializer_list<std::string_view> extra) const;
  Target parse_target(bool with_tuple, bool with_namespace, std::initializer_list<std::string_view> extra);
  Target parse_target_primary(bool with_namespace);
  ExprPtr parse_expression(bool with_condexpr);
  ExprPtr parse_tuple(bool simplified, bool with_condexpr, std::initializer_list<std::string_view> extra,
                      bool explicit_parentheses);
  ExprPtr parse_condexpr();
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter);
  ExprPtr parse_primary();
  ExprPtr parse_list();
  ExprPtr parse_dict();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  ExprPtr parse_subscribed();
  CallArgsExpr parse_call_args();
  ExprPtr parse_call(ExprPtr node);
  FilterCall parse_one_filter();
  std::vector<FilterCall> parse_filter_chain(bool start_inline);
  ExprPtr parse_filter(ExprPtr node);
  ExprPtr parse_test(ExprPtr node);
};

}  // namespace ds::jinja::detail
