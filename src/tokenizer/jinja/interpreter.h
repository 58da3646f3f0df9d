// Renders a syntax tree: scopes, control flow, macros and the sandbox limits.
//
// Scoping follows jinja2: a for-loop iteration, a macro call and a `with` block each get a new scope
// whose assignments vanish when it ends (hence `namespace()` in chat templates); `if` does not.
// Nothing outside the values passed in is reachable: no attribute of a Python object, no file, no
// import, no mutation of the caller's data.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja {

struct Limits {
  int64_t max_loop_iterations = 1'000'000;  // for-loop iterations over the whole render
  int max_recursion_depth = 100;            // nested macro calls
  size_t max_output_bytes = 16u << 20;      // the rendered text, and any single string or block built
  // Work done by builtins in one render: bytes of strings produced or scanned, 16 per list element
  // scanned. Bounds the time a template can spend inside filters and methods, as the iteration limit
  // bounds the time spent in loops.
  size_t max_total_string_bytes = 256u << 20;
  // CPU time of the rendering thread for one render, in seconds; 0: none. Templates a client sends get one
  // (ChatTemplate::kClientCpuSeconds): work that stays within the other limits can still be quadratic.
  // Checked on every loop iteration, macro or function call and builtin's charge, so one render overshoots
  // it by at most one builtin's work.
  double max_cpu_seconds = 0.0;
};

// Where strftime_now() reads the time; the default is the local time of the machine, as
// transformers' datetime.now().
using Clock = std::function<std::tm()>;

class Frame {
 public:
  explicit Frame(std::shared_ptr<Frame> parent) : parent_(std::move(parent)) {}
  [[nodiscard]] const Value* lookup(const std::string& name) const;
  void set(const std::string& name, Value value) { vars_[name] = std::move(value); }
  void clear() { vars_.clear(); }
  [[nodiscard]] const std::shared_ptr<Frame>& parent() const { return parent_; }

 private:
  std::shared_ptr<Frame> parent_;
  std::unordered_map<std::string, Value> vars_;
};

class Interpreter {
 public:
  Interpreter(const Limits& limits, Clock clock);
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders body in a scope under `globals`. Throws TemplateError.
  std::string render(const Body& body, std::shared_ptr<Frame> globals);

  // --- for builtins --------------------------------------------------------------------------------
  Value call(const Value& callee, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& input, CallArgs& args);
  bool apply_test(const std::string& name, const Value& input, CallArgs& args);
  [[nodiscard]] bool has_filter(const std::string& name) const;
  [[nodiscard]] bool has_test(const std::string& name) const;
  // obj.name and obj[key] with jinja2's sandboxed lookup rules.
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  // Accounts for n bytes of string work (produced or scanned); throws a LimitError fault past the limit.
  void charge_string(size_t n);
  // Accounts for n list elements built or scanned, at the per-element cost items_of() charges.
  void charge_items(size_t n);
  // Throws a LimitError fault when a builtin is about to build one string longer than max_output_bytes;
  // call it before allocating, with sizes a template chooses (a width, a precision, a repeat count).
  void check_string_size(uint64_t bytes) const;
  // Throws a LimitError fault once the render has used more than max_cpu_seconds of CPU time.
  void check_cpu_time();
  // iterate(v), with its elements charged as work.
  std::vector<Value> items_of(const Value& v);
  [[nodiscard]] const Limits& limits() const { return limits_; }
  [[nodiscard]] std::tm now() const { return clock_(); }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow exec_body(const Body& body, const std::shared_ptr<Frame>& frame, std::string& out);
  Flow exec(const Stmt& stmt, const std::shared_ptr<Frame>& frame, std::string& out);
  Flow exec_for(const ForStmt& stmt, const std::shared_ptr<Frame>& frame, std::string& out);
  void exec_set_block(const SetBlockStmt& stmt, const std::shared_ptr<Frame>& frame);
  void assign(const Target& target, const Value& value, const std::shared_ptr<Frame>& frame);
  Value make_macro(const MacroSignature& signature, const Body& body, const std::shared_ptr<Frame>& frame);
  Value invoke_macro(const MacroSignature& signature, const Body& body, const std::shared_ptr<Frame>& closure,
                     CallArgs& args);
  Value apply_filters(const std::vector<FilterCall>& filters, Value input,
                      const std::shared_ptr<Frame>& frame);

  Value eval(const Expr& expr, const std::shared_ptr<Frame>& frame);
  Value eval_inner(const Expr& expr, const std::shared_ptr<Frame>& frame);
  Value eval_compare(const CompareExpr& expr, const std::shared_ptr<Frame>& frame);
  Value eval_getitem(const GetitemExpr& expr, const std::shared_ptr<Frame>& frame);
  CallArgs eval_args(const CallArgsExpr& args, const std::shared_ptr<Frame>& frame);

  void append_output(std::string& out, std::string_view text);

  Limits limits_;
  Clock clock_;
  int64_t iterations_ = 0;
  size_t string_bytes_ = 0;
  int call_depth_ = 0;
  double cpu_start_ = 0.0;  // the thread's CPU seconds when render() began
  // Frames that a macro closes over; cleared after rendering to break the frame -> macro -> frame cycle.
  std::vector<std::shared_ptr<Frame>> closure_frames_;
};

}  // namespace ds::jinja
