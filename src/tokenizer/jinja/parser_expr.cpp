// Expressions and assignment targets, with jinja2's grammar (jinja2/parser.py, parse_tuple and below).
#include "tokenizer/jinja/parser_internal.h"

namespace ds::jinja::detail {

std::string describe(const Token& t) {
  switch (t.type) {
    case TokenType::kEof:
      return "end of template";
    case TokenType::kBlockEnd:
      return "end of statement block";
    case TokenType::kVariableEnd:
      return "end of print statement";
    case TokenType::kBlockBegin:
      return "begin of statement block";
    case TokenType::kVariableBegin:
      return "begin of print statement";
    case TokenType::kText:
      return "template data";
    case TokenType::kString:
      return "string";
    default:
      return t.value;
  }
}

// --- assignment targets --------------------------------------------------------------------------

bool ExpressionParser::is_tuple_end(std::initializer_list<std::string_view> extra) const {
  const TokenType t = current().type;
  if (t == TokenType::kVariableEnd || t == TokenType::kBlockEnd || t == TokenType::kEof || is_op(")"))
    return true;
  for (std::string_view name : extra) {
    if (is_name(name)) return true;
  }
  return false;
}

Target ExpressionParser::parse_target(bool with_tuple, bool with_namespace,
                                      std::initializer_list<std::string_view> extra) {
  const SourceLocation loc = current().location;
  std::vector<Target> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (is_tuple_end(extra)) break;
    items.push_back(parse_target_primary(with_namespace));
    if (with_tuple && is_op(",")) {
      is_tuple = true;
    } else {
      break;
    }
  }
  if (!is_tuple) {
    if (items.empty()) fail(fmt::format("Expected an expression, got '{}'", describe(current())));
    return std::move(items[0]);
  }
  Target t;
  t.kind = Target::Kind::kTuple;
  t.items = std::move(items);
  t.location = loc;
  return t;
}

Target ExpressionParser::parse_target_primary(bool with_namespace) {
  const Token& tok = current();
  Target t;
  t.location = tok.location;
  if (tok.type == TokenType::kName) {
    static constexpr std::string_view kConstNames[] = {"true", "false", "True", "False", "none", "None"};
    for (std::string_view c : kConstNames) {
      if (tok.value == c) fail("can't assign to 'const'");
    }
    t.name = next().value;
    if (with_namespace && is_op(".")) {
      next();
      t.kind = Target::Kind::kNamespaceAttr;
      t.attr = expect_name().value;
    }
    return t;
  }
  if (skip_op("(")) {
    Target inner = parse_target(true, with_namespace, {});
    expect_op(")");
    return inner;
  }
  fail(fmt::format("can't assign to '{}'", describe(tok)));
}

// --- expressions ---------------------------------------------------------------------------------

ExprPtr ExpressionParser::parse_expression(bool with_condexpr) {
  return with_condexpr ? parse_condexpr() : parse_or();
}

ExprPtr ExpressionParser::parse_tuple(bool simplified, bool with_condexpr,
                                      std::initializer_list<std::string_view> extra,
                                      bool explicit_parentheses) {
  const SourceLocation loc = current().location;
  std::vector<ExprPtr> args;
  bool is_tuple = false;
  while (true) {
    if (!args.empty()) expect_op(",");
    if (is_tuple_end(extra)) break;
    args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
    if (is_op(",")) {
      is_tuple = true;
    } else {
      break;
    }
  }
  if (!is_tuple) {
    if (!args.empty()) return std::move(args[0]);
    if (!explicit_parentheses) fail(fmt::format("Expected an expression, got '{}'", describe(current())));
  }
  auto tuple = std::make_unique<ListExpr>(true, loc);
  tuple->items = std::move(args);
  return tuple;
}

ExprPtr ExpressionParser::parse_condexpr() {
  DepthGuard guard(*this);
  SourceLocation loc = current().location;
  ExprPtr expr1 = parse_or();
  while (skip_name("if")) {
    ExprPtr expr2 = parse_or();
    ExprPtr expr3;
    if (skip_name("else")) expr3 = parse_condexpr();
    expr1 = std::make_unique<CondExpr>(std::move(expr2), std::move(expr1), std::move(expr3), loc);
    loc = current().location;
  }
  return expr1;
}

ExprPtr ExpressionParser::parse_or() {
  const SourceLocation loc = current().location;
  ExprPtr left = parse_and();
  while (skip_name("or"))
    left = std::make_unique<BinaryExpr>(BinaryOp::kOr, std::move(left), parse_and(), loc);
  return left;
}

ExprPtr ExpressionParser::parse_and() {
  const SourceLocation loc = current().location;
  ExprPtr left = parse_not();
  while (skip_name("and"))
    left = std::make_unique<BinaryExpr>(BinaryOp::kAnd, std::move(left), parse_not(), loc);
  return left;
}

ExprPtr ExpressionParser::parse_not() {
  if (is_name("not")) {
    DepthGuard guard(*this);
    const SourceLocation loc = next().location;
    return std::make_unique<UnaryExpr>(UnaryExpr::Op::kNot, parse_not(), loc);
  }
  return parse_compare();
}

ExprPtr ExpressionParser::parse_compare() {
  const SourceLocation loc = current().location;
  ExprPtr expr = parse_math1();
  std::unique_ptr<CompareExpr> cmp;
  auto add = [&](std::string op) {
    if (!cmp) cmp = std::make_unique<CompareExpr>(std::move(expr), loc);
    cmp->ops.emplace_back(std::move(op), parse_math1());
  };
  while (true) {
    static constexpr std::pair<std::string_view, std::string_view> kOps[] = {
        {"==", "eq"}, {"!=", "ne"}, {"<", "lt"}, {"<=", "lteq"}, {">", "gt"}, {">=", "gteq"}};
    bool matched = false;
    for (const auto& [sym, name] : kOps) {
      if (is_op(sym)) {
        next();
        add(std::string(name));
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (skip_name("in")) {
      add("in");
    } else if (is_name("not") && look().type == TokenType::kName && look().value == "in") {
      next();
      next();
      add("notin");
    } else {
      break;
    }
  }
  if (cmp) return cmp;
  return expr;
}

ExprPtr ExpressionParser::parse_math1() {
  const SourceLocation loc = current().location;
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    const BinaryOp op = next().value == "+" ? BinaryOp::kAdd : BinaryOp::kSub;
    left = std::make_unique<BinaryExpr>(op, std::move(left), parse_concat(), loc);
  }
  return left;
}

ExprPtr ExpressionParser::parse_concat() {
  const SourceLocation loc = current().location;
  ExprPtr first = parse_math2();
  if (!is_op("~")) return first;
  auto concat = std::make_unique<ConcatExpr>(loc);
  concat->parts.push_back(std::move(first));
  while (skip_op("~")) concat->parts.push_back(parse_math2());
  return concat;
}

ExprPtr ExpressionParser::parse_math2() {
  const SourceLocation loc = current().location;
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const std::string sym = next().value;
    const BinaryOp op = sym == "*"    ? BinaryOp::kMul
                        : sym == "/"  ? BinaryOp::kDiv
                        : sym == "//" ? BinaryOp::kFloorDiv
                                      : BinaryOp::kMod;
    left = std::make_unique<BinaryExpr>(op, std::move(left), parse_pow(), loc);
  }
  return left;
}

ExprPtr ExpressionParser::parse_pow() {
  const SourceLocation loc = current().location;
  ExprPtr left = parse_unary(true);
  while (skip_op("**"))
    left = std::make_unique<BinaryExpr>(BinaryOp::kPow, std::move(left), parse_unary(true), loc);
  return left;
}

ExprPtr ExpressionParser::parse_unary(bool with_filter) {
  DepthGuard guard(*this);
  const SourceLocation loc = current().location;
  ExprPtr node;
  if (skip_op("-")) {
    node = std::make_unique<UnaryExpr>(UnaryExpr::Op::kNeg, parse_unary(false), loc);
  } else if (skip_op("+")) {
    node = std::make_unique<UnaryExpr>(UnaryExpr::Op::kPos, parse_unary(false), loc);
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  if (with_filter) node = parse_filter_expr(std::move(node));
  return node;
}

ExprPtr ExpressionParser::parse_primary() {
  const Token& tok = current();
  const SourceLocation loc = tok.location;
  switch (tok.type) {
    case TokenType::kName: {
      const std::string name = next().value;
      if (name == "true" || name == "True") return std::make_unique<ConstExpr>(Value::boolean(true), loc);
      if (name == "false" || name == "False") return std::make_unique<ConstExpr>(Value::boolean(false), loc);
      if (name == "none" || name == "None") return std::make_unique<ConstExpr>(Value::none(), loc);
      return std::make_unique<NameExpr>(name, loc);
    }
    case TokenType::kString: {
      std::string s;
      while (current().type == TokenType::kString) s += next().value;
      return std::make_unique<ConstExpr>(Value::string(std::move(s)), loc);
    }
    case TokenType::kInteger:
      return std::make_unique<ConstExpr>(Value::integer(next().int_value), loc);
    case TokenType::kFloat:
      return std::make_unique<ConstExpr>(Value::number(next().float_value), loc);
    case TokenType::kOperator:
      if (skip_op("(")) {
        ExprPtr e = parse_tuple(false, true, {}, true);
        expect_op(")");
        return e;
      }
      if (is_op("[")) return parse_list();
      if (is_op("{")) return parse_dict();
      break;
    default:
      break;
  }
  fail(fmt::format("unexpected '{}'", describe(tok)));
}

ExprPtr ExpressionParser::parse_list() {
  auto list = std::make_unique<ListExpr>(false, expect_op("[").location);
  while (!is_op("]")) {
    if (!list->items.empty()) expect_op(",");
    if (is_op("]")) break;
    list->items.push_back(parse_expression(true));
  }
  expect_op("]");
  return list;
}

ExprPtr ExpressionParser::parse_dict() {
  auto dict = std::make_unique<DictExpr>(expect_op("{").location);
  while (!is_op("}")) {
    if (!dict->items.empty()) expect_op(",");
    if (is_op("}")) break;
    ExprPtr key = parse_expression(true);
    expect_op(":");
    dict->items.emplace_back(std::move(key), parse_expression(true));
  }
  expect_op("}");
  return dict;
}

ExprPtr ExpressionParser::parse_postfix(ExprPtr node) {
  while (true) {
    if (is_op(".") || is_op("[")) {
      node = parse_subscript(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr ExpressionParser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      node = parse_filter(std::move(node));
    } else if (is_name("is")) {
      node = parse_test(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr ExpressionParser::parse_subscript(ExprPtr node) {
  const Token& tok = next();
  const SourceLocation loc = tok.location;
  if (tok.value == ".") {
    const Token& attr = current();
    if (attr.type == TokenType::kName) {
      return std::make_unique<GetattrExpr>(std::move(node), next().value, loc);
    }
    if (attr.type != TokenType::kInteger) fail("expected name or number");
    auto index = std::make_unique<ConstExpr>(Value::integer(next().int_value), attr.location);
    return std::make_unique<GetitemExpr>(std::move(node), std::move(index), loc);
  }
  std::vector<ExprPtr> args;
  while (!is_op("]")) {
    if (!args.empty()) expect_op(",");
    args.push_back(parse_subscribed());
  }
  expect_op("]");
  if (args.size() == 1) return std::make_unique<GetitemExpr>(std::move(node), std::move(args[0]), loc);
  auto tuple = std::make_unique<ListExpr>(true, loc);
  tuple->items = std::move(args);
  return std::make_unique<GetitemExpr>(std::move(node), std::move(tuple), loc);
}

ExprPtr ExpressionParser::parse_subscribed() {
  const SourceLocation loc = current().location;
  ExprPtr start;
  if (!skip_op(":")) {
    start = parse_expression(true);
    if (!skip_op(":")) return start;
  }
  auto slice = std::make_unique<SliceExpr>(loc);
  slice->start = std::move(start);
  if (!is_op(":") && !is_op("]") && !is_op(",")) slice->stop = parse_expression(true);
  if (skip_op(":")) {
    if (!is_op("]") && !is_op(",")) slice->step = parse_expression(true);
  }
  return slice;
}

CallArgsExpr ExpressionParser::parse_call_args() {
  const SourceLocation loc = expect_op("(").location;
  CallArgsExpr out;
  bool require_comma = false;
  auto ensure = [&](bool ok) {
    if (!ok) fail_at("invalid syntax for function call expression", loc);
  };
  while (!is_op(")")) {
    if (require_comma) {
      expect_op(",");
      if (is_op(")")) break;
    }
    if (skip_op("*")) {
      ensure(!out.dyn_args && !out.dyn_kwargs);
      out.dyn_args = parse_expression(true);
    } else if (skip_op("**")) {
      ensure(!out.dyn_kwargs);
      out.dyn_kwargs = parse_expression(true);
    } else if (current().type == TokenType::kName && look().type == TokenType::kOperator &&
               look().value == "=") {
      ensure(!out.dyn_kwargs);
      std::string key = next().value;
      next();
      out.kwargs.emplace_back(std::move(key), parse_expression(true));
    } else {
      ensure(!out.dyn_args && !out.dyn_kwargs && out.kwargs.empty());
      out.args.push_back(parse_expression(true));
    }
    require_comma = true;
  }
  expect_op(")");
  return out;
}

ExprPtr ExpressionParser::parse_call(ExprPtr node) {
  auto call = std::make_unique<CallExpr>(std::move(node), current().location);
  call->args = parse_call_args();
  return call;
}

FilterCall ExpressionParser::parse_one_filter() {
  FilterCall f;
  f.location = current().location;
  f.name = expect_name().value;
  while (skip_op(".")) f.name += "." + expect_name().value;
  if (is_op("(")) f.args = parse_call_args();
  return f;
}

std::vector<FilterCall> ExpressionParser::parse_filter_chain(bool start_inline) {
  std::vector<FilterCall> chain;
  while (is_op("|") || start_inline) {
    if (!start_inline) next();
    chain.push_back(parse_one_filter());
    start_inline = false;
  }
  return chain;
}

ExprPtr ExpressionParser::parse_filter(ExprPtr node) {
  while (skip_op("|")) {
    auto f = std::make_unique<FilterExpr>(std::move(node), current().location);
    f->call = parse_one_filter();
    node = std::move(f);
  }
  return node;
}

ExprPtr ExpressionParser::parse_test(ExprPtr node) {
  const SourceLocation loc = next().location;  // "is"
  const bool negated = skip_name("not");
  auto test = std::make_unique<TestExpr>(std::move(node), loc);
  test->name = expect_name().value;
  while (skip_op(".")) test->name += "." + expect_name().value;
  const Token& t = current();
  const bool arg_start = t.type == TokenType::kName || t.type == TokenType::kString ||
                         t.type == TokenType::kInteger || t.type == TokenType::kFloat || is_op("[") ||
                         is_op("{");
  if (is_op("(")) {
    test->args = parse_call_args();
  } else if (arg_start && !is_name("else") && !is_name("or") && !is_name("and")) {
    if (is_name("is")) fail("You cannot chain multiple tests with is");
    test->args.args.push_back(parse_postfix(parse_primary()));
  }
  if (negated) return std::make_unique<UnaryExpr>(UnaryExpr::Op::kNot, std::move(test), loc);
  return test;
}

}  // namespace ds::jinja::detail
