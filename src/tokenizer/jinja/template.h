// A compiled Jinja template and its sandboxed rendering: the public face of src/tokenizer/jinja/.
//
//   jinja::Template t(source);                 // parses; throws TemplateSyntaxError
//   std::string text = t.render(variables);    // variables: a JSON object; throws TemplateError
//
// The environment is the one transformers' apply_chat_template uses: jinja2's
// ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols extension
// ({% break %}, {% continue %}), the {% generation %} tag, transformers' tojson filter and the
// raise_exception / strftime_now globals. Rendering reaches nothing but the variables passed in and is
// bounded by Limits. A Template is immutable after construction: render it from any number of
// threads at once.
//
// Undefined values behave as jinja2's default Undefined: they print as "", iterate as empty, are false,
// have length 0 and pass `is defined` / `|default`; arithmetic on them, calling them, and reading an
// attribute or item of them raise UndefinedError (a missing attribute of a defined value is undefined).
//
// Known differences from jinja2 (none matters to the chat templates in tests/fixtures/templates):
//   - include / import / extends / block and recursive for-loops are syntax errors (there is no loader);
//   - dict.items() / keys() / values(), range(), map / select / reject and reverse (of a list or dict) give
//     lists where jinja2 gives views, generators or iterators: printing one shows [...] rather than
//     dict_items([...]) or <generator ...>, and `[]|reverse` is false where jinja2's iterator is true;
//   - slicing a literal that is not a sequence (`1[:2]`) raises, where jinja2's constant folding gives
//     an undefined value (slicing a variable raises in both);
//   - Markup is not modelled: `safe` returns its input and nothing is ever HTML-escaped implicitly
//     (transformers renders with autoescape off, where this only shows in `x|safe + '<'`);
//   - ints are 64-bit (overflow is an error), and case mapping covers Latin, Greek and Cyrillic.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja {

struct TemplateOptions {
  bool trim_blocks = true;    // transformers' setting (jinja2's default is false)
  bool lstrip_blocks = true;  // transformers' setting (jinja2's default is false)
  Limits limits;
  Clock clock;  // strftime_now's time; empty: the local time at the call
};

class Template {
 public:
  explicit Template(std::string_view source, TemplateOptions options = {});

  // `variables` must be a JSON object; its members become the template's variables. Use ordered_json
  // so dicts keep the caller's key order (tojson prints them in that order, as Python does).
  [[nodiscard]] std::string render(const nlohmann::ordered_json& variables) const;
  [[nodiscard]] std::string render(const std::vector<std::pair<std::string, Value>>& variables) const;

  [[nodiscard]] const TemplateOptions& options() const { return options_; }

 private:
  std::shared_ptr<const Body> body_;
  TemplateOptions options_;
};

}  // namespace ds::jinja
