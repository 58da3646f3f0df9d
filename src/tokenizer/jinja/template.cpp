#include "tokenizer/jinja/template.h"

#include <ctime>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/parser.h"

namespace ds::jinja {
namespace {

std::tm local_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

}  // namespace

Template::Template(std::string_view source, TemplateOptions options) : options_(std::move(options)) {
  if (!options_.clock) options_.clock = local_now;
  ParseOptions parse_options;
  parse_options.lexer.trim_blocks = options_.trim_blocks;
  parse_options.lexer.lstrip_blocks = options_.lstrip_blocks;
  body_ = std::make_shared<const Body>(parse_template(source, parse_options));
}

std::string Template::render(const nlohmann::ordered_json& variables) const {
  if (!variables.is_object()) {
    throw TemplateRuntimeError("TypeError", "template variables must be a JSON object", SourceLocation{});
  }
  std::vector<std::pair<std::string, Value>> vars;
  vars.reserve(variables.size());
  try {
    for (auto it = variables.begin(); it != variables.end(); ++it)
      vars.emplace_back(it.key(), from_json(it.value()));
  } catch (const detail::Fault& fault) {
    detail::rethrow_at(fault, SourceLocation{});
  }
  return render(vars);
}

std::string Template::render(const std::vector<std::pair<std::string, Value>>& variables) const {
  auto globals = std::make_shared<Frame>(nullptr);
  builtins::install_globals(*globals);
  auto context = std::make_shared<Frame>(globals);
  for (const auto& [name, value] : variables) context->set(name, value);
  Interpreter interpreter(options_.limits, options_.clock);
  try {
    return interpreter.render(*body_, context);
  } catch (const detail::Fault& fault) {
    detail::rethrow_at(fault, SourceLocation{});
  }
}

}  // namespace ds::jinja
