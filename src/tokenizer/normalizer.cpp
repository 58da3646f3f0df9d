#include "tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "tokenizer/json_fields.h"
#include "tokenizer/unicode_nfc.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& step : steps_) step->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class NfcNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = to_nfc(text); }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& config, const std::string& path) {
  if (config.is_null()) return nullptr;
  const std::string type = jf::type_of(config, path);
  if (type == "Sequence") {
    const json& list = jf::require(config, "normalizers", path);
    const std::string list_path = jf::child(path, "normalizers");
    if (!list.is_array()) jf::fail(list_path, "expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_normalizer(list[i], jf::element(list_path, i));
      if (step != nullptr) steps.push_back(std::move(step));
    }
    if (steps.empty()) return nullptr;
    if (steps.size() == 1) return std::move(steps.front());
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  jf::fail(jf::child(path, "type"),
           fmt::format("normalizer {} not supported (supported: Sequence, NFC)", type));
}

}  // namespace ds::tokenizer
