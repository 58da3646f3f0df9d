// Normalizers of tokenizer.json, applied to text (outside non-normalized added tokens) before
// pre-tokenization. Supported: null, Sequence, NFC. Anything else is refused at load with a clear error
// rather than silently producing different token ids.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace ds::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// Returns nullptr for JSON null and for a Sequence with no steps.
[[nodiscard]] std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config,
                                                          const std::string& path);

}  // namespace ds::tokenizer
