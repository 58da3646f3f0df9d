// Statements: the template body, tags and their blocks (jinja2/parser.py, subparse and parse_*).
#include <fmt/format.h>

#include <initializer_list>

#include "tokenizer/jinja/parser.h"
#include "tokenizer/jinja/parser_internal.h"

namespace ds::jinja {
namespace {

using detail::describe;

class Parser : public detail::ExpressionParser {
 public:
  using ExpressionParser::ExpressionParser;

  Body parse() {
    Body body = subparse({});
    if (current().type != TokenType::kEof) fail(fmt::format("unexpected '{}'", describe(current())));
    return body;
  }

 private:
  // --- statements ----------------------------------------------------------------------------------

  Body subparse(std::initializer_list<std::string_view> end_names) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = current();
      switch (t.type) {
        case TokenType::kText:
          body.push_back(std::make_unique<TextStmt>(t.value, t.location));
          next();
          break;
        case TokenType::kVariableBegin: {
          const SourceLocation loc = next().location;
          body.push_back(std::make_unique<PrintStmt>(parse_tuple(false, true, {}, false), loc));
          expect_type(TokenType::kVariableEnd, "end of print statement");
          break;
        }
        case TokenType::kBlockBegin: {
          next();
          for (std::string_view end : end_names) {
            if (is_name(end)) return body;
          }
          parse_statement(body);
          expect_type(TokenType::kBlockEnd, "end of statement block");
          break;
        }
        case TokenType::kEof:
          return body;
        default:
          fail(fmt::format("unexpected '{}'", describe(t)));
      }
    }
  }

  // Parses a body up to one of end_names; the current token is then that name (or it is consumed when
  // drop_needle). The block_end of the opening tag is consumed first.
  Body parse_statements(std::initializer_list<std::string_view> end_names, bool drop_needle,
                        std::string_view opening_tag) {
    skip_op(":");
    expect_type(TokenType::kBlockEnd, "end of statement block");
    Body body = subparse(end_names);
    if (current().type == TokenType::kEof) {
      std::string wanted;
      for (std::string_view n : end_names) wanted += (wanted.empty() ? "'" : " or '") + std::string(n) + "'";
      fail(fmt::format(
          "Unexpected end of template. Jinja was looking for the following tags: {}. The innermost block "
          "that needs to be closed is '{}'.",
          wanted, opening_tag));
    }
    if (drop_needle) next();
    return body;
  }

  void parse_statement(Body& body) {
    const Token& tok = current();
    if (tok.type != TokenType::kName) fail("tag name expected");
    const std::string tag = tok.value;
    const SourceLocation loc = tok.location;
    if (tag == "if") {
      body.push_back(parse_if());
    } else if (tag == "for") {
      body.push_back(parse_for());
    } else if (tag == "set") {
      body.push_back(parse_set());
    } else if (tag == "macro") {
      body.push_back(parse_macro());
    } else if (tag == "call") {
      body.push_back(parse_call_block());
    } else if (tag == "filter") {
      next();
      auto stmt = std::make_unique<FilterBlockStmt>(loc);
      stmt->filters = parse_filter_chain(true);
      stmt->body = parse_statements({"endfilter"}, true, "filter");
      body.push_back(std::move(stmt));
    } else if (tag == "with") {
      body.push_back(parse_with());
    } else if (tag == "print") {
      next();
      bool first = true;
      while (current().type != TokenType::kBlockEnd) {
        if (!first) expect_op(",");
        first = false;
        const SourceLocation l = current().location;
        body.push_back(std::make_unique<PrintStmt>(parse_expression(true), l));
      }
    } else if (tag == "break" || tag == "continue") {
      next();
      if (loop_depth_ == 0) fail_at(fmt::format("'{}' outside of a loop", tag), loc);
      body.push_back(
          std::make_unique<SimpleStmt>(tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, loc));
    } else if (tag == "generation") {
      // transformers registers this tag (AssistantTracker) to mark assistant text; it renders its body.
      next();
      auto stmt = std::make_unique<ScopeStmt>(loc);
      stmt->body = parse_statements({"endgeneration"}, true, "generation");
      body.push_back(std::move(stmt));
    } else {
      fail_at(fmt::format("Encountered unknown tag '{}'.", tag), loc);
    }
  }

  StmtPtr parse_if() {
    auto stmt = std::make_unique<IfStmt>(next().location);
    while (true) {
      ExprPtr test = parse_tuple(false, false, {}, false);
      Body body = parse_statements({"elif", "else", "endif"}, false, "if");
      stmt->branches.emplace_back(std::move(test), std::move(body));
      const std::string which = next().value;
      if (which == "elif") continue;
      if (which == "else") stmt->else_body = parse_statements({"endif"}, true, "if");
      break;
    }
    return stmt;
  }

  StmtPtr parse_for() {
    auto stmt = std::make_unique<ForStmt>(next().location);
    stmt->target = parse_target(true, false, {"in"});
    expect_name("in");
    stmt->iter = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) stmt->filter = parse_expression(true);
    if (is_name("recursive")) fail("recursive for loops are not supported");
    ++loop_depth_;
    stmt->body = parse_statements({"endfor", "else"}, false, "for");
    --loop_depth_;
    if (next().value == "else") stmt->else_body = parse_statements({"endfor"}, true, "for");
    return stmt;
  }

  StmtPtr parse_set() {
    const SourceLocation loc = next().location;
    Target target = parse_target(true, true, {});
    if (skip_op("=")) {
      auto stmt = std::make_unique<SetStmt>(loc);
      stmt->target = std::move(target);
      stmt->value = parse_tuple(false, true, {}, false);
      return stmt;
    }
    auto stmt = std::make_unique<SetBlockStmt>(loc);
    stmt->target = std::move(target);
    stmt->filters = parse_filter_chain(false);
    stmt->body = parse_statements({"endset"}, true, "set");
    return stmt;
  }

  void parse_signature(MacroSignature& sig) {
    expect_op("(");
    while (!is_op(")")) {
      if (!sig.params.empty()) expect_op(",");
      sig.params.push_back(expect_name().value);
      if (skip_op("=")) {
        sig.defaults.push_back(parse_expression(true));
      } else if (!sig.defaults.empty()) {
        fail("non-default argument follows default argument");
      }
    }
    expect_op(")");
  }

  // Parses a macro body and records which of varargs / kwargs / caller it mentions.
  Body parse_macro_body(MacroSignature& sig, std::string_view end, std::string_view tag) {
    const int saved = loop_depth_;
    loop_depth_ = 0;
    const size_t first = pos_;
    Body body = parse_statements({end}, true, tag);
    for (size_t i = first; i < pos_; ++i) {
      if (tokens_[i].type != TokenType::kName) continue;
      sig.uses_varargs |= tokens_[i].value == "varargs";
      sig.uses_kwargs |= tokens_[i].value == "kwargs";
      sig.uses_caller |= tokens_[i].value == "caller";
    }
    loop_depth_ = saved;
    return body;
  }

  StmtPtr parse_macro() {
    auto stmt = std::make_unique<MacroStmt>(next().location);
    stmt->signature.name = expect_name().value;
    parse_signature(stmt->signature);
    stmt->body = parse_macro_body(stmt->signature, "endmacro", "macro");
    return stmt;
  }

  StmtPtr parse_call_block() {
    auto stmt = std::make_unique<CallBlockStmt>(next().location);
    stmt->signature.name = "caller";
    if (is_op("(")) parse_signature(stmt->signature);
    const SourceLocation loc = current().location;
    stmt->call = parse_expression(true);
    if (stmt->call->kind != Expr::Kind::kCall) fail_at("expected call", loc);
    stmt->body = parse_macro_body(stmt->signature, "endcall", "call");
    return stmt;
  }

  StmtPtr parse_with() {
    auto stmt = std::make_unique<WithStmt>(next().location);
    while (current().type != TokenType::kBlockEnd) {
      if (!stmt->assignments.empty()) expect_op(",");
      Target target = parse_target(true, false, {});
      expect_op("=");
      stmt->assignments.emplace_back(std::move(target), parse_expression(true));
    }
    stmt->body = parse_statements({"endwith"}, true, "with");
    return stmt;
  }

  int loop_depth_ = 0;
};

}  // namespace

Body parse_template(std::string_view source, const ParseOptions& options) {
  Body body = Parser(tokenize(source, options.lexer), options).parse();
  check_filters_and_tests(body);
  return body;
}

}  // namespace ds::jinja
