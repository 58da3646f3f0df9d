#include "server/request_log.h"

#include <algorithm>
#include <span>

#include "engine/request_params.h"
#include "io/json_limits.h"

namespace ds::server {

nlohmann::json request_log_details(const std::vector<PromptInput>& prompts, const SamplingParams& params,
                                   const tokenizer::Tokenizer* tokenizer) {
  size_t budget = kLoggedPromptBytes;
  bool truncated = false;
  nlohmann::json logged = nlohmann::json::array();
  for (const PromptInput& p : prompts) {
    if (budget == 0) {
      truncated = true;
      break;
    }
    // A prompt of token ids is logged with its text too when there is a tokenizer. Every token decodes to
    // a byte at least, so the first `budget` tokens cover what can be logged.
    std::string full;
    bool cut = false;
    if (p.text) {
      full = *p.text;
    } else if (tokenizer != nullptr) {
      full = tokenizer->decode(std::span<const int32_t>(p.ids.data(), std::min(p.ids.size(), budget)), false);
      cut = p.ids.size() > budget;
    }
    const std::string text = truncate_text(full, budget);
    if (cut || text != full) truncated = true;
    budget -= std::min(budget, text.size());
    nlohmann::json ids = nlohmann::json::array();
    for (int32_t id : p.ids) {
      const size_t cost = fmt::formatted_size("{},", id);
      if (cost > budget) {
        truncated = true;
        break;
      }
      budget -= cost;
      ids.push_back(id);
    }
    logged.push_back({{"text", text}, {"token_ids", std::move(ids)}});
  }
  return {{"prompts", std::move(logged)},
          {"prompt_truncated", truncated},
          {"params", sampling_params_json(params)}};
}

}  // namespace ds::server
