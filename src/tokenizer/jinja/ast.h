// The syntax tree of a template: expressions and statements, as jinja2.nodes has them.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja {

// --- expressions -----------------------------------------------------------------------------------

struct Expr {
  enum class Kind {
    kConst,
    kName,
    kList,  // list or tuple literal
    kDict,
    kGetattr,
    kGetitem,
    kSlice,  // only as the index of a Getitem
    kCall,
    kFilter,
    kTest,
    kUnary,
    kBinary,
    kConcat,
    kCompare,
    kCond,
  };
  explicit Expr(Kind k, SourceLocation l) : kind(k), location(l) {}
  virtual ~Expr() = default;
  Kind kind;
  SourceLocation location;
};
using ExprPtr = std::unique_ptr<Expr>;

struct ConstExpr : Expr {
  ConstExpr(Value v, SourceLocation l) : Expr(Kind::kConst, l), value(std::move(v)) {}
  Value value;
};

struct NameExpr : Expr {
  NameExpr(std::string n, SourceLocation l) : Expr(Kind::kName, l), name(std::move(n)) {}
  std::string name;
};

struct ListExpr : Expr {
  ListExpr(bool tuple, SourceLocation l) : Expr(Kind::kList, l), is_tuple(tuple) {}
  std::vector<ExprPtr> items;
  bool is_tuple;
};

struct DictExpr : Expr {
  explicit DictExpr(SourceLocation l) : Expr(Kind::kDict, l) {}
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

struct GetattrExpr : Expr {
  GetattrExpr(ExprPtr o, std::string a, SourceLocation l)
      : Expr(Kind::kGetattr, l), object(std::move(o)), attr(std::move(a)) {}
  ExprPtr object;
  std::string attr;
};

struct GetitemExpr : Expr {
  GetitemExpr(ExprPtr o, ExprPtr i, SourceLocation l)
      : Expr(Kind::kGetitem, l), object(std::move(o)), index(std::move(i)) {}
  ExprPtr object;
  ExprPtr index;
};

struct SliceExpr : Expr {
  explicit SliceExpr(SourceLocation l) : Expr(Kind::kSlice, l) {}
  ExprPtr start, stop, step;  // each may be null
};

struct CallArgsExpr {
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args;    // *args
  ExprPtr dyn_kwargs;  // **kwargs
};

struct CallExpr : Expr {
  CallExpr(ExprPtr c, SourceLocation l) : Expr(Kind::kCall, l), callee(std::move(c)) {}
  ExprPtr callee;
  CallArgsExpr args;
};

struct FilterCall {
  std::string name;
  CallArgsExpr args;
  SourceLocation location;
};

struct FilterExpr : Expr {
  FilterExpr(ExprPtr o, SourceLocation l) : Expr(Kind::kFilter, l), operand(std::move(o)) {}
  ExprPtr operand;
  FilterCall call;
};

struct TestExpr : Expr {
  TestExpr(ExprPtr o, SourceLocation l) : Expr(Kind::kTest, l), operand(std::move(o)) {}
  ExprPtr operand;
  std::string name;
  CallArgsExpr args;
};

struct UnaryExpr : Expr {
  enum class Op { kNot, kNeg, kPos };
  UnaryExpr(Op o, ExprPtr e, SourceLocation l) : Expr(Kind::kUnary, l), op(o), operand(std::move(e)) {}
  Op op;
  ExprPtr operand;
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kAnd, kOr };

struct BinaryExpr : Expr {
  BinaryExpr(BinaryOp o, ExprPtr a, ExprPtr b, SourceLocation l)
      : Expr(Kind::kBinary, l), op(o), left(std::move(a)), right(std::move(b)) {}
  BinaryOp op;
  ExprPtr left;
  ExprPtr right;
};

struct ConcatExpr : Expr {
  explicit ConcatExpr(SourceLocation l) : Expr(Kind::kConcat, l) {}
  std::vector<ExprPtr> parts;
};

struct CompareExpr : Expr {
  CompareExpr(ExprPtr f, SourceLocation l) : Expr(Kind::kCompare, l), first(std::move(f)) {}
  ExprPtr first;
  // Operators: "eq", "ne", "lt", "lteq", "gt", "gteq", "in", "notin".
  std::vector<std::pair<std::string, ExprPtr>> ops;
};

struct CondExpr : Expr {
  CondExpr(ExprPtr t, ExprPtr a, ExprPtr b, SourceLocation l)
      : Expr(Kind::kCond, l), test(std::move(t)), then_expr(std::move(a)), else_expr(std::move(b)) {}
  ExprPtr test;
  ExprPtr then_expr;
  ExprPtr else_expr;  // null: undefined when the test fails
};

// --- assignment targets ----------------------------------------------------------------------------

struct Target {
  enum class Kind { kName, kNamespaceAttr, kTuple };
  Kind kind = Kind::kName;
  std::string name;
  std::string attr;  // kNamespaceAttr: `{% set ns.attr = ... %}`
  std::vector<Target> items;
  SourceLocation location;
};

// --- statements ------------------------------------------------------------------------------------

struct Stmt {
  enum class Kind {
    kText,
    kPrint,
    kIf,
    kFor,
    kSet,
    kSetBlock,
    kMacro,
    kCallBlock,
    kFilterBlock,
    kWith,
    kBreak,
    kContinue,
    kScope,  // a body with no effect of its own: HF's {% generation %}
  };
  Stmt(Kind k, SourceLocation l) : kind(k), location(l) {}
  virtual ~Stmt() = default;
  Kind kind;
  SourceLocation location;
};
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct TextStmt : Stmt {
  TextStmt(std::string t, SourceLocation l) : Stmt(Kind::kText, l), text(std::move(t)) {}
  std::string text;
};

struct PrintStmt : Stmt {
  PrintStmt(ExprPtr e, SourceLocation l) : Stmt(Kind::kPrint, l), expr(std::move(e)) {}
  ExprPtr expr;
};

struct IfStmt : Stmt {
  explicit IfStmt(SourceLocation l) : Stmt(Kind::kIf, l) {}
  std::vector<std::pair<ExprPtr, Body>> branches;  // if, elif...
  Body else_body;
};

struct ForStmt : Stmt {
  explicit ForStmt(SourceLocation l) : Stmt(Kind::kFor, l) {}
  Target target;
  ExprPtr iter;
  ExprPtr filter;  // `for x in xs if cond`; may be null
  Body body;
  Body else_body;
};

struct SetStmt : Stmt {
  explicit SetStmt(SourceLocation l) : Stmt(Kind::kSet, l) {}
  Target target;
  ExprPtr value;
};

struct SetBlockStmt : Stmt {
  explicit SetBlockStmt(SourceLocation l) : Stmt(Kind::kSetBlock, l) {}
  Target target;
  std::vector<FilterCall> filters;
  Body body;
};

// What a macro body refers to decides, as in jinja2, whether surplus arguments are accepted.
struct MacroSignature {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  bool uses_varargs = false;
  bool uses_kwargs = false;
  bool uses_caller = false;
};

struct MacroStmt : Stmt {
  explicit MacroStmt(SourceLocation l) : Stmt(Kind::kMacro, l) {}
  MacroSignature signature;
  Body body;
};

struct CallBlockStmt : Stmt {
  explicit CallBlockStmt(SourceLocation l) : Stmt(Kind::kCallBlock, l) {}
  MacroSignature signature;  // of the `caller` macro
  ExprPtr call;              // a CallExpr
  Body body;
};

struct FilterBlockStmt : Stmt {
  explicit FilterBlockStmt(SourceLocation l) : Stmt(Kind::kFilterBlock, l) {}
  std::vector<FilterCall> filters;
  Body body;
};

struct WithStmt : Stmt {
  explicit WithStmt(SourceLocation l) : Stmt(Kind::kWith, l) {}
  std::vector<std::pair<Target, ExprPtr>> assignments;
  Body body;
};

struct ScopeStmt : Stmt {
  explicit ScopeStmt(SourceLocation l) : Stmt(Kind::kScope, l) {}
  Body body;
};

struct SimpleStmt : Stmt {
  using Stmt::Stmt;  // break, continue
};

}  // namespace ds::jinja
