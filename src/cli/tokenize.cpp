#include "cli/tokenize.h"

#include <nlohmann/json.hpp>

#include <cstdio>

#include "tokenizer/prompt.h"
#include "util/check.h"

namespace ds::cli {

CLI::App* add_tokenize_command(CLI::App& app, TokenizeOptions& o) {
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the rendered prompt and its token ids");
  cmd->add_option("--model", o.model_dir, "Model directory with tokenizer.json (and tokenizer_config.json)")
      ->required();
  auto* text = cmd->add_option("--text", o.text, "Text to tokenize");
  auto* chat = cmd->add_option("--chat", o.chat_file,
                               "Conversation file: a JSON list of messages, or {\"messages\": [...], \"tools\": ...}");
  text->excludes(chat);
  cmd->add_flag("--add-generation-prompt", o.add_generation_prompt, "With --chat: end with the assistant's turn");
  cmd->add_flag("--no-special-tokens", o.no_special_tokens, "With --text: do not add BOS");
  cmd->add_flag("--json", o.json, "Print {\"text\": ..., \"ids\": [...]}");
  return cmd;
}

int run_tokenize(const TokenizeOptions& o) {
  DS_REQUIRE(!o.text.empty() || !o.chat_file.empty(), InvalidArgument, "give --text TEXT or --chat FILE.json");
  const PromptEncoder encoder = PromptEncoder::from_model_dir(o.model_dir);
  std::string rendered;
  std::vector<int32_t> ids;
  if (!o.chat_file.empty()) {
    ChatTemplateInputs inputs = PromptEncoder::read_chat_file(o.chat_file);
    if (o.add_generation_prompt) inputs.add_generation_prompt = true;
    rendered = encoder.render_chat(inputs);
    ids = encoder.encode_chat(inputs);
  } else {
    rendered = o.text;
    ids = encoder.encode_text(o.text, !o.no_special_tokens);
  }
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"text", rendered}, {"ids", ids}}).dump().c_str());
  } else {
    std::printf("%s\n", rendered.c_str());
    std::string line;
    for (int32_t id : ids) line += (line.empty() ? "" : ",") + std::to_string(id);
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

}  // namespace ds::cli
