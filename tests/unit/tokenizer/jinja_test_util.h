// Helpers for the Jinja engine tests: render a template with transformers' environment.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tokenizer/jinja/template.h"

namespace ds::jinja::testing {

// A fixed clock (2025-03-14 15:09:26, a Friday) so strftime_now is reproducible.
inline TemplateOptions test_options() {
  TemplateOptions o;
  o.clock = [] {
    std::tm tm{};
    tm.tm_year = 125;
    tm.tm_mon = 2;
    tm.tm_mday = 14;
    tm.tm_hour = 15;
    tm.tm_min = 9;
    tm.tm_sec = 26;
    tm.tm_wday = 5;
    tm.tm_yday = 72;
    return tm;
  };
  return o;
}

inline std::string render(std::string_view source,
                          const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                          TemplateOptions options = test_options()) {
  return Template(source, std::move(options)).render(vars);
}

}  // namespace ds::jinja::testing
