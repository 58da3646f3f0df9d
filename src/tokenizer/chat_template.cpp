#include "tokenizer/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace ds {
namespace {

// transformers' SPECIAL_TOKENS_ATTRIBUTES, in special_tokens_map's order.
constexpr std::string_view kSpecialTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                                  "pad_token", "cls_token", "mask_token"};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ChatTemplateError(fmt::format("cannot read {}", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::ordered_json read_json(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ChatTemplateError(fmt::format("{} is not valid JSON: {}", path.string(), e.what()));
  }
}

// A special token as tokenizer_config.json writes it: "<s>", {"content": "<s>", ...} or null.
std::optional<std::string> token_text(const nlohmann::ordered_json& v, std::string_view key) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  throw ChatTemplateError(
      fmt::format("tokenizer_config.json: {} must be a string or an object with \"content\"", key));
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, const nlohmann::ordered_json& special_tokens,
                           jinja::TemplateOptions options) {
  single_ = true;
  add_template("default", std::move(source), options);
  set_special_tokens(special_tokens);
}

void ChatTemplate::add_template(std::string name, std::string source, const jinja::TemplateOptions& options) {
  auto compiled = std::make_shared<const jinja::Template>(source, options);
  templates_.push_back({std::move(name), std::move(source), std::move(compiled)});
}

void ChatTemplate::set_special_tokens(const nlohmann::ordered_json& config) {
  if (!config.is_object()) throw ChatTemplateError("special tokens must be a JSON object");
  special_tokens_ = nlohmann::ordered_json::object();
  for (std::string_view key : kSpecialTokenKeys) {
    const auto it = config.find(std::string(key));
    if (it == config.end()) continue;
    if (auto text = token_text(*it, key)) special_tokens_[std::string(key)] = *text;
  }
  if (const auto it = config.find("additional_special_tokens");
      it != config.end() && it->is_array() && !it->empty()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& t : *it) {
      if (auto text = token_text(t, "additional_special_tokens")) list.push_back(*text);
    }
    special_tokens_["additional_special_tokens"] = std::move(list);
  }
  if (special_tokens_.contains("bos_token")) bos_token_ = special_tokens_["bos_token"].get<std::string>();
  if (special_tokens_.contains("eos_token")) eos_token_ = special_tokens_["eos_token"].get<std::string>();
  if (const auto it = config.find("add_bos_token"); it != config.end() && it->is_boolean()) {
    add_bos_token_ = it->get<bool>();
  }
}

ChatTemplate ChatTemplate::from_tokenizer_config(const nlohmann::ordered_json& config,
                                                 jinja::TemplateOptions options) {
  if (!config.is_object()) throw ChatTemplateError("tokenizer_config.json must hold a JSON object");
  ChatTemplate ct;
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    throw ChatTemplateError(
        "tokenizer_config.json has no chat_template: this looks like a base model; use completions, or pass "
        "a "
        "template");
  }
  if (it->is_string()) {
    ct.single_ = true;
    ct.add_template("default", it->get<std::string>(), options);
  } else if (it->is_array()) {
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("template") || !entry["template"].is_string()) {
        throw ChatTemplateError(
            "tokenizer_config.json: chat_template list entries must be {\"name\": string, \"template\": "
            "string}");
      }
      ct.add_template(entry["name"].get<std::string>(), entry["template"].get<std::string>(), options);
    }
    if (ct.templates_.empty())
      throw ChatTemplateError("tokenizer_config.json: chat_template is an empty list");
  } else {
    throw ChatTemplateError(
        "tokenizer_config.json: chat_template must be a string or a list of named templates");
  }
  ct.set_special_tokens(config);
  return ct;
}

ChatTemplate ChatTemplate::from_tokenizer_config_file(const std::filesystem::path& path,
                                                      jinja::TemplateOptions options) {
  return from_tokenizer_config(read_json(path), std::move(options));
}

ChatTemplate ChatTemplate::from_model_dir(const std::filesystem::path& dir, jinja::TemplateOptions options) {
  const auto config_path = dir / "tokenizer_config.json";
  nlohmann::ordered_json config =
      std::filesystem::exists(config_path) ? read_json(config_path) : nlohmann::ordered_json::object();
  // transformers >= 4.50 saves templates next to the config; they win over the config's copy.
  const auto jinja_path = dir / "chat_template.jinja";
  const auto extra_dir = dir / "additional_chat_templates";
  std::vector<std::pair<std::string, std::filesystem::path>> files;
  if (std::filesystem::exists(jinja_path)) files.emplace_back("default", jinja_path);
  if (std::filesystem::is_directory(extra_dir)) {
    std::vector<std::pair<std::string, std::filesystem::path>> extra;
    for (const auto& e : std::filesystem::directory_iterator(extra_dir)) {
      if (e.path().extension() == ".jinja") extra.emplace_back(e.path().stem().string(), e.path());
    }
    std::sort(extra.begin(), extra.end());
    files.insert(files.end(), extra.begin(), extra.end());
  }
  if (!files.empty()) {
    if (files.size() == 1 && files[0].first == "default") {
      config["chat_template"] = read_file(files[0].second);
    } else {
      nlohmann::ordered_json list = nlohmann::ordered_json::array();
      for (const auto& [name, path] : files) list.push_back({{"name", name}, {"template", read_file(path)}});
      config["chat_template"] = std::move(list);
    }
  } else if (!config.contains("chat_template") && std::filesystem::exists(dir / "chat_template.json")) {
    const auto j = read_json(dir / "chat_template.json");
    if (j.is_object() && j.contains("chat_template")) config["chat_template"] = j["chat_template"];
  }
  try {
    return from_tokenizer_config(config, std::move(options));
  } catch (const ChatTemplateError& e) {
    throw ChatTemplateError(fmt::format("{}: {}", dir.string(), e.what()));
  }
}

std::vector<std::string> ChatTemplate::template_names() const {
  std::vector<std::string> names;
  for (const auto& t : templates_) names.push_back(t.name);
  return names;
}

bool ChatTemplate::has_template(std::string_view name) const {
  return std::any_of(templates_.begin(), templates_.end(), [&](const auto& t) { return t.name == name; });
}

const ChatTemplate::NamedTemplate& ChatTemplate::select(std::string_view template_name,
                                                        bool with_tools) const {
  auto find = [&](std::string_view name) -> const NamedTemplate* {
    for (const auto& t : templates_) {
      if (t.name == name) return &t;
    }
    return nullptr;
  };
  if (single_) {
    if (!template_name.empty() && template_name != "default") {
      throw ChatTemplateError(
          fmt::format("this model has a single chat template; there is none named '{}'", template_name));
    }
    return templates_.front();
  }
  if (!template_name.empty()) {
    if (const auto* t = find(template_name)) return *t;
    std::string names;
    for (const auto& t : templates_) names += (names.empty() ? "" : ", ") + t.name;
    throw ChatTemplateError(
        fmt::format("no chat template named '{}'; this model has: {}", template_name, names));
  }
  if (with_tools) {
    if (const auto* t = find("tool_use")) return *t;
  }
  if (const auto* t = find("default")) return *t;
  throw ChatTemplateError(
      "this model has multiple chat templates with no default specified; pick one by name");
}

const std::string& ChatTemplate::source(std::string_view template_name, bool with_tools) const {
  return select(template_name, with_tools).source;
}

std::string ChatTemplate::apply(const ChatTemplateInputs& inputs, std::string_view template_name) const {
  const bool with_tools = !inputs.tools.is_null();
  const NamedTemplate& t = select(template_name, with_tools);
  if (!inputs.kwargs.is_object()) throw ChatTemplateError("chat template kwargs must be a JSON object");
  // The order transformers passes them in: render(messages=, tools=, documents=, add_generation_prompt=,
  // **{**special_tokens_map, **kwargs}).
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = inputs.messages;
  vars["tools"] = inputs.tools;
  vars["documents"] = inputs.documents;
  vars["add_generation_prompt"] = inputs.add_generation_prompt;
  for (const auto& [key, value] : special_tokens_.items()) vars[key] = value;
  for (const auto& [key, value] : inputs.kwargs.items()) {
    if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt") {
      throw ChatTemplateError(
          fmt::format("chat template kwarg '{}' would replace an argument of the same name", key));
    }
    vars[key] = value;
  }
  return t.compiled->render(vars);
}

}  // namespace ds
