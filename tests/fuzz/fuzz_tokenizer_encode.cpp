// The fixture tokenizer (tests/fixtures/tokenizer: DeepSeek-V3's pre-tokenizer, special tokens and ByteLevel
// decoder) on arbitrary bytes. Checks, for input x:
//   - x not valid UTF-8: encode throws ds::UserError; valid: it does not throw;
//   - every id is in [0, vocab_size());
//   - decode(encode(x, no special tokens)) == x, with special tokens read as ids and as text;
//   - with add_special_tokens (tokenizer_config.json's add_bos_token): BOS first, decode(ids) == BOS + x;
//   - the incremental detokenizer's deltas are valid UTF-8 and concatenate to decode(ids), with and
//     without skip_special_tokens;
//   - the same for the input read as a sequence of 16-bit ids (some past the vocabulary), which splits
//     multi-byte characters across tokens in ways encoding never does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "fuzz_check.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/check.h"

namespace {

using ds::tokenizer::EncodeOptions;
using ds::tokenizer::IncrementalDetokenizer;
using ds::tokenizer::TokenId;
using ds::tokenizer::Tokenizer;

const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tok = Tokenizer::from_dir(DS_FIXTURES_DIR "/tokenizer");
  return tok;
}

void check_detokenizer(const Tokenizer& tok, const std::vector<TokenId>& ids, bool skip_special_tokens) {
  const std::string full = tok.decode(ids, skip_special_tokens);
  IncrementalDetokenizer detok(tok, skip_special_tokens);
  std::string streamed;
  for (const TokenId id : ids) {
    const std::string delta = detok.step(id);
    FUZZ_CHECK(ds::tokenizer::is_valid_utf8(delta), "detokenizer delta is not valid UTF-8");
    streamed += delta;
  }
  const std::string rest = detok.finish();
  FUZZ_CHECK(ds::tokenizer::is_valid_utf8(rest), "detokenizer finish() is not valid UTF-8");
  streamed += rest;
  FUZZ_CHECK(streamed == full, "streamed deltas != decode(ids) (skip_special=%d)", int(skip_special_tokens));
}

std::vector<TokenId> encode(const Tokenizer& tok, std::string_view text, bool add_special,
                            bool split_special) {
  EncodeOptions options;
  options.add_special_tokens = add_special;
  options.split_special_tokens = split_special;
  std::vector<TokenId> ids = tok.encode(text, options);
  for (const TokenId id : ids) {
    FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "id %d outside [0, %zu)", id,
               tok.vocab_size());
  }
  return ids;
}

}  // namespace

// Loading warns about odd but accepted files (an added token listed under another id); at thousands of
// loads a second that is only noise in the log.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = fixture_tokenizer();
  const std::string_view x = ds::fuzz::as_text(data, size);

  if (!ds::tokenizer::is_valid_utf8(x)) {
    bool threw = false;
    try {
      (void)tok.encode(x, false);
    } catch (const ds::UserError&) {
      threw = true;
    }
    FUZZ_CHECK(threw, "encode accepted invalid UTF-8");
  } else {
    for (const bool split_special : {false, true}) {
      const std::vector<TokenId> ids = encode(tok, x, false, split_special);
      FUZZ_CHECK(tok.decode(ids) == x, "decode(encode(x)) != x (split_special=%d)", int(split_special));
      check_detokenizer(tok, ids, false);
      check_detokenizer(tok, ids, true);
    }
    const std::vector<TokenId> with_bos = encode(tok, x, true, false);
    FUZZ_CHECK(!with_bos.empty() && with_bos[0] == tok.bos_token_id(), "no BOS in front");
    FUZZ_CHECK(tok.decode(with_bos) == *tok.id_to_token(*tok.bos_token_id()) + std::string(x),
               "decode(encode(x) with BOS) != BOS + x");
  }

  // The bytes as little-endian 16-bit ids: about 2.5% of them are past the vocabulary (unknown ids are
  // skipped by decode), the rest are arbitrary tokens whose bytes may be pieces of characters.
  std::vector<TokenId> ids;
  for (size_t i = 0; i + 1 < size; i += 2) {
    ids.push_back(static_cast<TokenId>((data[i] | (data[i + 1] << 8)) % (tok.vocab_size() + 64)));
  }
  check_detokenizer(tok, ids, false);
  check_detokenizer(tok, ids, true);
  return 0;
}
