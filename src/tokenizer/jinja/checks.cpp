// Compile-time checks jinja2 makes before rendering: a filter or test that does not exist is a
// TemplateAssertionError (a TemplateSyntaxError) unless it sits inside an `if` (test, branches) or an
// inline if-expression, where jinja2 defers the error to the moment it is reached.
#include <fmt/format.h>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/parser.h"

namespace ds::jinja {
namespace {

class NameChecker {
 public:
  void body(const Body& stmts, bool soft) {
    for (const auto& s : stmts) stmt(*s, soft);
  }

 private:
  void stmt(const Stmt& s, bool soft) {
    switch (s.kind) {
      case Stmt::Kind::kText:
      case Stmt::Kind::kBreak:
      case Stmt::Kind::kContinue:
        return;
      case Stmt::Kind::kPrint:
        return expr(static_cast<const PrintStmt&>(s).expr.get(), soft);
      case Stmt::Kind::kIf: {
        const auto& x = static_cast<const IfStmt&>(s);
        for (const auto& [test, branch] : x.branches) {
          expr(test.get(), true);
          body(branch, true);
        }
        return body(x.else_body, true);
      }
      case Stmt::Kind::kFor: {
        const auto& x = static_cast<const ForStmt&>(s);
        expr(x.iter.get(), soft);
        expr(x.filter.get(), false);
        body(x.body, false);
        return body(x.else_body, false);
      }
      case Stmt::Kind::kSet:
        return expr(static_cast<const SetStmt&>(s).value.get(), soft);
      case Stmt::Kind::kSetBlock: {
        const auto& x = static_cast<const SetBlockStmt&>(s);
        filters(x.filters, soft);
        return body(x.body, false);
      }
      case Stmt::Kind::kMacro: {
        const auto& x = static_cast<const MacroStmt&>(s);
        for (const auto& d : x.signature.defaults) expr(d.get(), false);
        return body(x.body, false);
      }
      case Stmt::Kind::kCallBlock: {
        const auto& x = static_cast<const CallBlockStmt&>(s);
        expr(x.call.get(), soft);
        return body(x.body, false);
      }
      case Stmt::Kind::kFilterBlock: {
        const auto& x = static_cast<const FilterBlockStmt&>(s);
        filters(x.filters, soft);
        return body(x.body, false);
      }
      case Stmt::Kind::kWith: {
        const auto& x = static_cast<const WithStmt&>(s);
        for (const auto& [target, value] : x.assignments) expr(value.get(), soft);
        return body(x.body, false);
      }
      case Stmt::Kind::kScope:
        return body(static_cast<const ScopeStmt&>(s).body, false);
    }
  }

  void args(const CallArgsExpr& a, bool soft) {
    for (const auto& x : a.args) expr(x.get(), soft);
    for (const auto& [k, x] : a.kwargs) expr(x.get(), soft);
    expr(a.dyn_args.get(), soft);
    expr(a.dyn_kwargs.get(), soft);
  }

  void filters(const std::vector<FilterCall>& chain, bool soft) {
    for (const auto& f : chain) check_filter(f, soft);
  }

  void expr(const Expr* e, bool soft) {
    if (e == nullptr) return;
    switch (e->kind) {
      case Expr::Kind::kConst:
      case Expr::Kind::kName:
        return;
      case Expr::Kind::kList:
        for (const auto& x : static_cast<const ListExpr*>(e)->items) expr(x.get(), soft);
        return;
      case Expr::Kind::kDict:
        for (const auto& [k, v] : static_cast<const DictExpr*>(e)->items) {
          expr(k.get(), soft);
          expr(v.get(), soft);
        }
        return;
      case Expr::Kind::kGetattr:
        return expr(static_cast<const GetattrExpr*>(e)->object.get(), soft);
      case Expr::Kind::kGetitem: {
        const auto* x = static_cast<const GetitemExpr*>(e);
        expr(x->object.get(), soft);
        return expr(x->index.get(), soft);
      }
      case Expr::Kind::kSlice: {
        const auto* x = static_cast<const SliceExpr*>(e);
        expr(x->start.get(), soft);
        expr(x->stop.get(), soft);
        return expr(x->step.get(), soft);
      }
      case Expr::Kind::kCall: {
        const auto* x = static_cast<const CallExpr*>(e);
        expr(x->callee.get(), soft);
        return args(x->args, soft);
      }
      case Expr::Kind::kFilter: {
        const auto* x = static_cast<const FilterExpr*>(e);
        expr(x->operand.get(), soft);
        return check_filter(x->call, soft);
      }
      case Expr::Kind::kTest: {
        const auto* x = static_cast<const TestExpr*>(e);
        if (!soft && builtins::find_test(x->name) == nullptr) {
          throw TemplateSyntaxError(fmt::format("No test named '{}'.", x->name), x->location);
        }
        expr(x->operand.get(), soft);
        return args(x->args, soft);
      }
      case Expr::Kind::kUnary:
        return expr(static_cast<const UnaryExpr*>(e)->operand.get(), soft);
      case Expr::Kind::kBinary: {
        const auto* x = static_cast<const BinaryExpr*>(e);
        expr(x->left.get(), soft);
        return expr(x->right.get(), soft);
      }
      case Expr::Kind::kConcat:
        for (const auto& x : static_cast<const ConcatExpr*>(e)->parts) expr(x.get(), soft);
        return;
      case Expr::Kind::kCompare: {
        const auto* x = static_cast<const CompareExpr*>(e);
        expr(x->first.get(), soft);
        for (const auto& [op, operand] : x->ops) expr(operand.get(), soft);
        return;
      }
      case Expr::Kind::kCond: {
        const auto* x = static_cast<const CondExpr*>(e);
        expr(x->test.get(), true);
        expr(x->then_expr.get(), true);
        return expr(x->else_expr.get(), true);
      }
    }
  }

  void check_filter(const FilterCall& f, bool soft) {
    if (!soft && builtins::find_filter(f.name) == nullptr) {
      throw TemplateSyntaxError(fmt::format("No filter named '{}'.", f.name), f.location);
    }
    args(f.args, soft);
  }
};

}  // namespace

void check_filters_and_tests(const Body& body) {
  NameChecker().body(body, false);
}

}  // namespace ds::jinja
