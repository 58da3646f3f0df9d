// Post-processors of tokenizer.json: which special tokens encode(text, add_special_tokens=true) puts
// around the ids of one sequence. Supported: TemplateProcessing (its "single" template), ByteLevel (adds
// nothing), BertProcessing / RobertaProcessing ([cls] A [sep]) and Sequence of these.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/bpe.h"

namespace ds::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Surrounds `ids` (one encoded sequence) with the special tokens, when add_special_tokens.
  virtual void process(std::vector<TokenId>& ids, bool add_special_tokens) const = 0;
};

// Returns nullptr for JSON null.
[[nodiscard]] std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& config,
                                                                 const std::string& path);

// prefix + A + suffix: what transformers builds from tokenizer_config's add_bos_token / add_eos_token.
[[nodiscard]] std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<TokenId> prefix,
                                                                    std::vector<TokenId> suffix);

}  // namespace ds::tokenizer
