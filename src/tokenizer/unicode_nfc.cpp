#include "tokenizer/unicode_nfc.h"

#include "util/check.h"

namespace ds::tokenizer {

std::string to_nfc(std::string_view text) {
  throw UserError("normalizer NFC not supported");
}

}  // namespace ds::tokenizer
