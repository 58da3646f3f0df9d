#include "tokenizer/jinja/interpreter.h"

#include <fmt/format.h>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja {
namespace {

// What scanning one list element costs against Limits::max_total_string_bytes.
constexpr size_t kElementCost = 16;

}  // namespace

const Value* Frame::lookup(const std::string& name) const {
  for (const Frame* f = this; f != nullptr; f = f->parent_.get()) {
    auto it = f->vars_.find(name);
    if (it != f->vars_.end()) return &it->second;
  }
  return nullptr;
}

Interpreter::Interpreter(const Limits& limits, Clock clock) : limits_(limits), clock_(std::move(clock)) {}

Interpreter::~Interpreter() {
  for (auto& frame : closure_frames_) frame->clear();
}

namespace {
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}
}  // namespace

std::string Interpreter::render(const Body& body, std::shared_ptr<Frame> globals) {
  cpu_start_ = thread_cpu_seconds();
  auto frame = std::make_shared<Frame>(std::move(globals));
  closure_frames_.push_back(frame);
  std::string out;
  exec_body(body, frame, out);
  return out;
}

// --- budget ----------------------------------------------------------------------------------------

void Interpreter::check_cpu_time() {
  if (limits_.max_cpu_seconds <= 0.0) return;
  if (thread_cpu_seconds() - cpu_start_ > limits_.max_cpu_seconds) {
    detail::throw_limit(fmt::format("the template used more than its CPU-time limit of {} s for one render",
                                    limits_.max_cpu_seconds));
  }
}

void Interpreter::charge_string(size_t n) {
  check_cpu_time();
  string_bytes_ += n;
  if (string_bytes_ > limits_.max_total_string_bytes) {
    detail::throw_limit(
        fmt::format("the template produced more than {} bytes of strings", limits_.max_total_string_bytes));
  }
}

void Interpreter::charge_items(size_t n) {
  charge_string(n * kElementCost);
}

void Interpreter::check_string_size(uint64_t bytes) const {
  if (bytes > limits_.max_output_bytes) {
    detail::throw_limit(fmt::format("string exceeds {} bytes", limits_.max_output_bytes));
  }
}

std::vector<Value> Interpreter::items_of(const Value& v) {
  if (v.is_string()) charge_string(v.as_string().size());
  std::vector<Value> items = iterate(v);
  charge_string(items.size() * kElementCost);
  return items;
}

void Interpreter::append_output(std::string& out, std::string_view text) {
  if (out.size() + text.size() > limits_.max_output_bytes) {
    detail::throw_limit(fmt::format("the rendered output exceeds {} bytes", limits_.max_output_bytes));
  }
  charge_string(text.size());
  out.append(text);
}

// --- statements ------------------------------------------------------------------------------------

Interpreter::Flow Interpreter::exec_body(const Body& body, const std::shared_ptr<Frame>& frame,
                                         std::string& out) {
  for (const auto& stmt : body) {
    const Flow flow = exec(*stmt, frame, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec(const Stmt& stmt, const std::shared_ptr<Frame>& frame, std::string& out) {
  try {
    switch (stmt.kind) {
      case Stmt::Kind::kText:
        append_output(out, static_cast<const TextStmt&>(stmt).text);
        return Flow::kNormal;
      case Stmt::Kind::kPrint: {
        const Value v = eval(*static_cast<const PrintStmt&>(stmt).expr, frame);
        if (v.is_string()) {
          append_output(out, v.as_string());
        } else {
          append_output(out, to_str(v));
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf: {
        const auto& s = static_cast<const IfStmt&>(stmt);
        for (const auto& [test, body] : s.branches) {
          if (truthy(eval(*test, frame))) return exec_body(body, frame, out);
        }
        return exec_body(s.else_body, frame, out);
      }
      case Stmt::Kind::kFor:
        return exec_for(static_cast<const ForStmt&>(stmt), frame, out);
      case Stmt::Kind::kSet: {
        const auto& s = static_cast<const SetStmt&>(stmt);
        assign(s.target, eval(*s.value, frame), frame);
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock:
        exec_set_block(static_cast<const SetBlockStmt&>(stmt), frame);
        return Flow::kNormal;
      case Stmt::Kind::kMacro: {
        const auto& s = static_cast<const MacroStmt&>(stmt);
        frame->set(s.signature.name, make_macro(s.signature, s.body, frame));
        return Flow::kNormal;
      }
      case Stmt::Kind::kCallBlock: {
        const auto& s = static_cast<const CallBlockStmt&>(stmt);
        const auto& call = static_cast<const CallExpr&>(*s.call);
        const Value callee = eval(*call.callee, frame);
        CallArgs args = eval_args(call.args, frame);
        args.kwargs.emplace_back("caller", make_macro(s.signature, s.body, frame));
        const Value result = this->call(callee, args);
        append_output(out, to_str(result));
        return Flow::kNormal;
      }
      case Stmt::Kind::kFilterBlock: {
        const auto& s = static_cast<const FilterBlockStmt&>(stmt);
        std::string buffer;
        const Flow flow = exec_body(s.body, frame, buffer);
        const Value v = apply_filters(s.filters, Value::string(std::move(buffer)), frame);
        append_output(out, to_str(v));
        return flow;
      }
      case Stmt::Kind::kWith: {
        const auto& s = static_cast<const WithStmt&>(stmt);
        auto inner = std::make_shared<Frame>(frame);
        for (const auto& [target, value] : s.assignments) assign(target, eval(*value, frame), inner);
        return exec_body(s.body, inner, out);
      }
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kScope:
        return exec_body(static_cast<const ScopeStmt&>(stmt).body, frame, out);
    }
  } catch (const detail::Fault& fault) {
    detail::rethrow_at(fault, stmt.location);
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec_for(const ForStmt& stmt, const std::shared_ptr<Frame>& frame,
                                        std::string& out) {
  const Value iterable = eval(*stmt.iter, frame);
  std::vector<Value> items = items_of(iterable);
  if (stmt.filter) {
    std::vector<Value> kept;
    for (Value& item : items) {
      auto probe = std::make_shared<Frame>(frame);
      assign(stmt.target, item, probe);
      if (truthy(eval(*stmt.filter, probe))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const auto length = static_cast<int64_t>(items.size());
  // jinja2 marks the loop as iterated at the end of the body, so iterations cut short by break or
  // continue do not count: `else` runs unless one iteration ran to its end.
  bool iterated = false;
  for (int64_t i = 0; i < length; ++i) {
    if (++iterations_ > limits_.max_loop_iterations) {
      detail::throw_limit(
          fmt::format("the template ran more than {} loop iterations", limits_.max_loop_iterations));
    }
    check_cpu_time();
    auto inner = std::make_shared<Frame>(frame);
    const auto idx = static_cast<size_t>(i);
    assign(stmt.target, items[idx], inner);
    DictObject loop;
    loop.set("index", Value::integer(i + 1));
    loop.set("index0", Value::integer(i));
    loop.set("revindex", Value::integer(length - i));
    loop.set("revindex0", Value::integer(length - i - 1));
    loop.set("first", Value::boolean(i == 0));
    loop.set("last", Value::boolean(i == length - 1));
    loop.set("length", Value::integer(length));
    loop.set("depth", Value::integer(1));
    loop.set("depth0", Value::integer(0));
    loop.set("previtem", i > 0 ? items[idx - 1] : Value::undefined("there is no previous item"));
    loop.set("nextitem", i + 1 < length ? items[idx + 1] : Value::undefined("there is no next item"));
    loop.set("cycle", Value::function("cycle", [i](CallArgs& args, Interpreter&) {
               if (args.args.empty()) detail::throw_type_error("no items for cycling given");
               return args.args[static_cast<size_t>(i) % args.args.size()];
             }));
    inner->set("loop", Value::dict(std::move(loop)));
    const Flow flow = exec_body(stmt.body, inner, out);
    if (flow == Flow::kBreak) break;
    if (flow == Flow::kNormal) iterated = true;
  }
  if (!iterated) return exec_body(stmt.else_body, frame, out);
  return Flow::kNormal;
}

void Interpreter::exec_set_block(const SetBlockStmt& stmt, const std::shared_ptr<Frame>& frame) {
  std::string buffer;
  exec_body(stmt.body, frame, buffer);
  assign(stmt.target, apply_filters(stmt.filters, Value::string(std::move(buffer)), frame), frame);
}

void Interpreter::assign(const Target& target, const Value& value, const std::shared_ptr<Frame>& frame) {
  switch (target.kind) {
    case Target::Kind::kName:
      frame->set(target.name, value);
      return;
    case Target::Kind::kNamespaceAttr: {
      const Value* ns = frame->lookup(target.name);
      if (ns == nullptr || !ns->is_namespace()) {
        throw TemplateRuntimeError("TemplateRuntimeError", "cannot assign attribute on non-namespace object",
                                   target.location);
      }
      ns->namespace_attrs().set(target.attr, value);
      return;
    }
    case Target::Kind::kTuple: {
      const std::vector<Value> items = iterate(value);
      const size_t want = target.items.size();
      if (items.size() < want) {
        detail::throw_value_error(
            fmt::format("not enough values to unpack (expected {}, got {})", want, items.size()));
      }
      if (items.size() > want)
        detail::throw_value_error(fmt::format("too many values to unpack (expected {})", want));
      for (size_t i = 0; i < want; ++i) assign(target.items[i], items[i], frame);
      return;
    }
  }
}

Value Interpreter::apply_filters(const std::vector<FilterCall>& filters, Value input,
                                 const std::shared_ptr<Frame>& frame) {
  for (const auto& f : filters) {
    try {
      CallArgs args = eval_args(f.args, frame);
      input = apply_filter(f.name, input, args);
    } catch (const detail::Fault& fault) {
      detail::rethrow_at(fault, f.location);
    }
  }
  return input;
}

// --- macros ----------------------------------------------------------------------------------------

Value Interpreter::make_macro(const MacroSignature& signature, const Body& body,
                              const std::shared_ptr<Frame>& frame) {
  if (closure_frames_.empty() || closure_frames_.back() != frame) closure_frames_.push_back(frame);
  const MacroSignature* sig = &signature;
  const Body* code = &body;
  std::shared_ptr<Frame> closure = frame;
  return Value::function(signature.name, [sig, code, closure](CallArgs& args, Interpreter& interp) {
    return interp.invoke_macro(*sig, *code, closure, args);
  });
}

Value Interpreter::invoke_macro(const MacroSignature& sig, const Body& body,
                                const std::shared_ptr<Frame>& closure, CallArgs& args) {
  if (++iterations_ > limits_.max_loop_iterations) {
    detail::throw_limit(fmt::format("the template ran more than {} loop iterations and macro calls",
                                    limits_.max_loop_iterations));
  }
  check_cpu_time();
  if (call_depth_ >= limits_.max_recursion_depth) {
    detail::throw_limit(fmt::format("macro calls nested deeper than {}", limits_.max_recursion_depth));
  }
  struct DepthGuard {
    int& depth;
    explicit DepthGuard(int& d) : depth(d) { ++depth; }
    ~DepthGuard() { --depth; }
  } guard(call_depth_);

  auto frame = std::make_shared<Frame>(closure);
  const size_t n = sig.params.size();
  std::vector<bool> bound(n, false);
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.args.size(); ++i) {
    if (i < n) {
      frame->set(sig.params[i], args.args[i]);
      bound[i] = true;
    } else if (sig.uses_varargs) {
      varargs.push_back(args.args[i]);
    } else {
      detail::throw_type_error(fmt::format("macro '{}' takes not more than {} argument(s)", sig.name, n));
    }
  }
  DictObject kwargs;
  for (auto& [key, value] : args.kwargs) {
    const auto it = std::find(sig.params.begin(), sig.params.end(), key);
    if (it != sig.params.end()) {
      const auto i = static_cast<size_t>(it - sig.params.begin());
      if (bound[i])
        detail::throw_type_error(
            fmt::format("macro '{}' got multiple values for argument '{}'", sig.name, key));
      frame->set(key, value);
      bound[i] = true;
    } else if (key == "caller" && sig.uses_caller) {
      frame->set("caller", value);
    } else if (sig.uses_kwargs) {
      kwargs.set(key, value);
    } else {
      detail::throw_type_error(fmt::format("macro '{}' takes no keyword argument '{}'", sig.name, key));
    }
  }
  const size_t first_default = n - sig.defaults.size();
  for (size_t i = 0; i < n; ++i) {
    if (bound[i]) continue;
    if (i >= first_default) {
      frame->set(sig.params[i], eval(*sig.defaults[i - first_default], frame));
    } else {
      frame->set(sig.params[i],
                 Value::undefined(fmt::format("parameter '{}' was not provided", sig.params[i])));
    }
  }
  frame->set("varargs", Value::tuple(std::move(varargs)));
  frame->set("kwargs", Value::dict(std::move(kwargs)));
  std::string out;
  exec_body(body, frame, out);
  return Value::string(std::move(out));
}

// --- expressions -----------------------------------------------------------------------------------

Value Interpreter::eval(const Expr& expr, const std::shared_ptr<Frame>& frame) {
  try {
    return eval_inner(expr, frame);
  } catch (const detail::Fault& fault) {
    detail::rethrow_at(fault, expr.location);
  }
}

Value Interpreter::eval_inner(const Expr& expr, const std::shared_ptr<Frame>& frame) {
  switch (expr.kind) {
    case Expr::Kind::kConst:
      return static_cast<const ConstExpr&>(expr).value;
    case Expr::Kind::kName: {
      const auto& name = static_cast<const NameExpr&>(expr).name;
      const Value* v = frame->lookup(name);
      return v != nullptr ? *v : Value::undefined(fmt::format("'{}' is undefined", name));
    }
    case Expr::Kind::kList: {
      const auto& e = static_cast<const ListExpr&>(expr);
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& item : e.items) items.push_back(eval(*item, frame));
      return e.is_tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    case Expr::Kind::kDict: {
      DictObject d;
      for (const auto& [k, v] : static_cast<const DictExpr&>(expr).items) {
        const Value key = eval(*k, frame);
        if (key.is_dict() || (key.is_list() && !key.is_tuple()) || key.is_namespace()) {
          detail::throw_type_error(fmt::format("unhashable type: '{}'", type_name(key)));
        }
        d.set(key, eval(*v, frame));
      }
      return Value::dict(std::move(d));
    }
    case Expr::Kind::kGetattr: {
      const auto& e = static_cast<const GetattrExpr&>(expr);
      return getattr(eval(*e.object, frame), e.attr);
    }
    case Expr::Kind::kGetitem:
      return eval_getitem(static_cast<const GetitemExpr&>(expr), frame);
    case Expr::Kind::kSlice:
      detail::throw_type_error("a slice is only valid as a subscript");
    case Expr::Kind::kCall: {
      const auto& e = static_cast<const CallExpr&>(expr);
      const Value callee = eval(*e.callee, frame);
      CallArgs args = eval_args(e.args, frame);
      return call(callee, args);
    }
    case Expr::Kind::kFilter: {
      const auto& e = static_cast<const FilterExpr&>(expr);
      const Value input = eval(*e.operand, frame);
      CallArgs args = eval_args(e.call.args, frame);
      return apply_filter(e.call.name, input, args);
    }
    case Expr::Kind::kTest: {
      const auto& e = static_cast<const TestExpr&>(expr);
      const Value input = eval(*e.operand, frame);
      CallArgs args = eval_args(e.args, frame);
      return Value::boolean(apply_test(e.name, input, args));
    }
    case Expr::Kind::kUnary: {
      const auto& e = static_cast<const UnaryExpr&>(expr);
      const Value v = eval(*e.operand, frame);
      switch (e.op) {
        case UnaryExpr::Op::kNot:
          return Value::boolean(!truthy(v));
        case UnaryExpr::Op::kNeg:
          return builtins::negate(v);
        case UnaryExpr::Op::kPos:
          return builtins::unary_plus(v);
      }
      break;
    }
    case Expr::Kind::kBinary: {
      const auto& e = static_cast<const BinaryExpr&>(expr);
      Value left = eval(*e.left, frame);
      if (e.op == BinaryOp::kAnd) return truthy(left) ? eval(*e.right, frame) : left;
      if (e.op == BinaryOp::kOr) return truthy(left) ? left : eval(*e.right, frame);
      return builtins::binary(e.op, left, eval(*e.right, frame), *this);
    }
    case Expr::Kind::kConcat: {
      std::string out;
      for (const auto& part : static_cast<const ConcatExpr&>(expr).parts) {
        const Value v = eval(*part, frame);
        const std::string s = v.is_string() ? v.as_string() : to_str(v);
        if (out.size() + s.size() > limits_.max_output_bytes) {
          detail::throw_limit(fmt::format("string exceeds {} bytes", limits_.max_output_bytes));
        }
        out += s;
      }
      charge_string(out.size());
      return Value::string(std::move(out));
    }
    case Expr::Kind::kCompare:
      return eval_compare(static_cast<const CompareExpr&>(expr), frame);
    case Expr::Kind::kCond: {
      const auto& e = static_cast<const CondExpr&>(expr);
      if (truthy(eval(*e.test, frame))) return eval(*e.then_expr, frame);
      if (e.else_expr) return eval(*e.else_expr, frame);
      return Value::undefined(fmt::format(
          "the inline if-expression on line {} evaluated to false and no else section was defined.",
          e.location.line));
    }
  }
  detail::throw_type_error("unknown expression");
}

Value Interpreter::eval_compare(const CompareExpr& expr, const std::shared_ptr<Frame>& frame) {
  Value left = eval(*expr.first, frame);
  for (const auto& [op, operand] : expr.ops) {
    Value right = eval(*operand, frame);
    bool ok = false;
    if (op == "eq") {
      ok = equals(left, right);
    } else if (op == "ne") {
      ok = !equals(left, right);
    } else if (op == "lt") {
      ok = less_than(left, right);
    } else if (op == "lteq") {
      ok = less_than(left, right) || equals(left, right);
    } else if (op == "gt") {
      ok = less_than(right, left);
    } else if (op == "gteq") {
      ok = less_than(right, left) || equals(left, right);
    } else {
      if (right.is_string()) charge_string(right.as_string().size());
      if (right.is_list()) charge_string(right.items().size() * kElementCost);
      ok = contains(right, left) == (op == "in");
    }
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interpreter::eval_getitem(const GetitemExpr& expr, const std::shared_ptr<Frame>& frame) {
  const Value obj = eval(*expr.object, frame);
  if (expr.index->kind == Expr::Kind::kSlice) {
    const auto& s = static_cast<const SliceExpr&>(*expr.index);
    const Value start = s.start ? eval(*s.start, frame) : Value::none();
    const Value stop = s.stop ? eval(*s.stop, frame) : Value::none();
    const Value step = s.step ? eval(*s.step, frame) : Value::none();
    fail_if_undefined(obj);
    if (obj.is_string()) charge_string(obj.as_string().size());
    if (obj.is_list()) charge_string(obj.items().size() * kElementCost);
    if (obj.is_string() || obj.is_list()) return builtins::slice(obj, start, stop, step);
    // jinja2 compiles a slice to a plain Python subscript, which raises rather than giving undefined.
    if (obj.is_dict()) detail::throw_type_error("unhashable type: 'slice'");
    detail::throw_type_error(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  }
  return getitem(obj, eval(*expr.index, frame));
}

CallArgs Interpreter::eval_args(const CallArgsExpr& args, const std::shared_ptr<Frame>& frame) {
  CallArgs out;
  out.args.reserve(args.args.size());
  for (const auto& a : args.args) out.args.push_back(eval(*a, frame));
  if (args.dyn_args) {
    for (Value& v : iterate(eval(*args.dyn_args, frame))) out.args.push_back(std::move(v));
  }
  for (const auto& [k, v] : args.kwargs) out.kwargs.emplace_back(k, eval(*v, frame));
  if (args.dyn_kwargs) {
    const Value d = eval(*args.dyn_kwargs, frame);
    if (!d.is_dict()) detail::throw_type_error("argument after ** must be a mapping");
    for (const auto& [k, v] : d.as_dict().entries()) {
      if (!k.is_string()) detail::throw_type_error("keywords must be strings");
      out.kwargs.emplace_back(k.as_string(), v);
    }
  }
  return out;
}

// --- lookups and calls -----------------------------------------------------------------------------

Value Interpreter::getattr(const Value& obj, const std::string& name) {
  fail_if_undefined(obj);
  if (obj.is_dict()) {
    if (auto method = builtins::bound_method(obj, name)) return *method;
    if (const Value* v = obj.as_dict().find(name)) return *v;
  } else if (obj.is_namespace()) {
    if (const Value* v = obj.as_dict().find(name)) return *v;
  } else if (auto method = builtins::bound_method(obj, name)) {
    return *method;
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(obj), name));
}

Value Interpreter::getitem(const Value& obj, const Value& key) {
  fail_if_undefined(obj);
  if (obj.is_dict() || obj.is_namespace()) {
    if (const Value* v = obj.as_dict().find(key)) return *v;
  } else if ((obj.is_list() || obj.is_string()) && key.is_integral()) {
    if (obj.is_list()) {
      if (auto i = builtins::normalize_index(key.as_int(), obj.items().size())) return obj.items()[*i];
    } else {
      charge_string(obj.as_string().size());
      const std::u32string text = pystr::decode(obj.as_string());
      if (auto i = builtins::normalize_index(key.as_int(), text.size())) {
        std::string s;
        pystr::append_utf8(s, text[*i]);
        return Value::string(std::move(s));
      }
    }
  }
  // Python's obj[key] failed: jinja2 retries a string key as an attribute.
  if (key.is_string()) return getattr(obj, key.as_string());
  return Value::undefined(fmt::format("'{} object' has no element {}", type_name(obj), to_repr(key)));
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  fail_if_undefined(callee);
  check_cpu_time();
  if (!callee.is_function())
    detail::throw_type_error(fmt::format("'{}' object is not callable", type_name(callee)));
  return callee.as_function().fn(args, *this);
}

Value Interpreter::apply_filter(const std::string& name, const Value& input, CallArgs& args) {
  const builtins::FilterFn fn = builtins::find_filter(name);
  if (fn == nullptr)
    detail::throw_fault(detail::Fault::Kind::kType, fmt::format("No filter named '{}'.", name));
  return fn(*this, input, args);
}

bool Interpreter::apply_test(const std::string& name, const Value& input, CallArgs& args) {
  const builtins::TestFn fn = builtins::find_test(name);
  if (fn == nullptr)
    detail::throw_fault(detail::Fault::Kind::kType, fmt::format("No test named '{}'.", name));
  return fn(*this, input, args);
}

bool Interpreter::has_filter(const std::string& name) const {
  return builtins::find_filter(name) != nullptr;
}
bool Interpreter::has_test(const std::string& name) const {
  return builtins::find_test(name) != nullptr;
}

}  // namespace ds::jinja
