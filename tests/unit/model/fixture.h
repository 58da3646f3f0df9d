// Reading the HF reference outputs in tests/fixtures/<model>/expected.json, and building ForwardBatches.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/deepseek.h"

namespace ds::testing {

inline std::string fixture_dir(const std::string& name) { return std::string(DS_FIXTURES_DIR) + "/" + name; }

inline nlohmann::json load_expected(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/expected.json");
  return nlohmann::json::parse(in);
}

// log_softmax of one row, in double.
inline std::vector<double> log_softmax(const float* logits, int64_t n) {
  double mx = logits[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
  const double lse = std::log(sum) + mx;
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = logits[i] - lse;
  return out;
}

// A sequence in a batch: the tokens of this step, how many of its tokens are already cached, its blocks.
struct SeqStep {
  std::vector<int32_t> tokens;
  int32_t num_cached = 0;
  std::vector<int32_t> blocks;
  bool all_logits = false;  // logits for every token of the step, else only the last
};

inline ForwardBatch make_batch(const std::vector<SeqStep>& seqs, int32_t block_size) {
  ForwardBatch b;
  size_t max_blocks = 0;
  for (const auto& s : seqs) max_blocks = std::max(max_blocks, s.blocks.size());
  b.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  b.query_start_loc.push_back(0);
  for (const auto& s : seqs) {
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t pos = s.num_cached + static_cast<int32_t>(i);
      b.token_ids.push_back(s.tokens[i]);
      b.positions.push_back(pos);
      b.slot_mapping.push_back(int64_t{s.blocks.at(static_cast<size_t>(pos / block_size))} * block_size +
                               pos % block_size);
      if (s.all_logits || i + 1 == s.tokens.size()) b.logits_indices.push_back(static_cast<int32_t>(b.token_ids.size() - 1));
    }
    b.query_start_loc.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.seq_lens.push_back(s.num_cached + static_cast<int32_t>(s.tokens.size()));
    for (size_t i = 0; i < max_blocks; ++i) b.block_table.push_back(i < s.blocks.size() ? s.blocks[i] : 0);
  }
  return b;
}

// Logits [ids.size(), vocab] of a fresh sequence in one pass (blocks 0, 1, ... of 16 tokens), on the host; with
// a trace, the residual stream after each layer too (DeepseekModel::forward).
inline std::vector<float> one_pass_logits(DeepseekModel& model, const std::vector<int32_t>& ids,
                                          std::vector<std::vector<float>>* trace = nullptr) {
  std::vector<int32_t> blocks((ids.size() + 15) / 16);
  std::iota(blocks.begin(), blocks.end(), 0);
  const Tensor logits = model.forward(make_batch({SeqStep{ids, 0, blocks, true}}, 16), trace);
  std::vector<float> v(static_cast<size_t>(logits.numel()));
  model.backend().copy_to_host(logits, v);
  return v;
}

// The same through any runner (a tensor-parallel group), without the trace.
inline std::vector<float> one_pass_logits(ModelRunner& model, const std::vector<int32_t>& ids) {
  std::vector<int32_t> blocks((ids.size() + 15) / 16);
  std::iota(blocks.begin(), blocks.end(), 0);
  const Tensor logits = model.forward(make_batch({SeqStep{ids, 0, blocks, true}}, 16));
  std::vector<float> v(static_cast<size_t>(logits.numel()));
  model.backend().copy_to_host(logits, v);
  return v;
}

}  // namespace ds::testing
