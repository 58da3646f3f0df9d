#include "tokenizer/decoder.h"

#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    std::string bytes;
    for (const std::string& token : tokens) alphabet.decode_token(token, bytes);
    tokens.assign(1, utf8_lossy(bytes));
  }
  [[nodiscard]] bool is_byte_level() const override { return true; }
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }
  [[nodiscard]] bool is_byte_level() const override {
    return steps_.size() == 1 && steps_[0]->is_byte_level();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& config, const std::string& path) {
  if (config.is_null()) return nullptr;
  const std::string type = jf::type_of(config, path);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Sequence") {
    const json& list = jf::require(config, "decoders", path);
    const std::string list_path = jf::child(path, "decoders");
    if (!list.is_array()) jf::fail(list_path, "expected an array");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto step = make_decoder(list[i], jf::element(list_path, i))) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  jf::fail(jf::child(path, "type"),
           fmt::format("decoder {:?} is not supported (supported: ByteLevel, Sequence)", type));
}

}  // namespace ds::tokenizer
