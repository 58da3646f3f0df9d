#include "backend/backend.h"

namespace ds {

Tensor Backend::zeros(std::vector<int64_t> shape) {
  Tensor t = empty(std::move(shape));
  fill_zero(t);
  return t;
}

void ForwardBatch::validate(int64_t num_kv_slots, int32_t block_size) const {
  const int64_t n = num_tokens();
  DS_CHECK(static_cast<int64_t>(positions.size()) == n, "positions {} vs tokens {}", positions.size(), n);
  DS_CHECK(static_cast<int64_t>(slot_mapping.size()) == n, "slot_mapping {} vs tokens {}", slot_mapping.size(), n);
  DS_CHECK(static_cast<int64_t>(query_start_loc.size()) == num_seqs() + 1, "query_start_loc {} vs seqs {}",
           query_start_loc.size(), num_seqs());
  DS_CHECK(query_start_loc.front() == 0 && query_start_loc.back() == n, "query_start_loc must span [0, {}]", n);
  DS_CHECK(static_cast<int64_t>(block_table.size()) == num_seqs() * max_blocks_per_seq, "block_table size {}",
           block_table.size());
  for (int64_t s = 0; s < num_seqs(); ++s) {
    const int32_t q_len = query_start_loc[s + 1] - query_start_loc[s];
    DS_CHECK(q_len >= 0 && q_len <= seq_lens[s], "seq {}: {} new tokens but context {}", s, q_len, seq_lens[s]);
    DS_CHECK(seq_lens[s] <= int64_t{max_blocks_per_seq} * block_size, "seq {}: context {} exceeds its blocks", s,
             seq_lens[s]);
  }
  for (int64_t slot : slot_mapping) DS_CHECK(slot >= -1 && slot < num_kv_slots, "slot {} out of range", slot);
  for (int32_t i : logits_indices) DS_CHECK(i >= 0 && i < n, "logits index {} out of range", i);
}

bool ForwardBatch::is_decode() const {
  if (num_tokens() != num_seqs() || static_cast<int64_t>(logits_indices.size()) != num_tokens()) return false;
  for (int64_t i = 0; i < num_tokens(); ++i)
    if (query_start_loc[static_cast<size_t>(i)] != i || logits_indices[static_cast<size_t>(i)] != i) return false;
  return true;
}

void Backend::begin_capture() {
  throw InternalError("this backend cannot capture graphs");
}

int64_t Backend::end_capture() {
  throw InternalError("this backend cannot capture graphs");
}

void Backend::replay_graph(int64_t) {
  throw InternalError("this backend cannot replay graphs");
}

}  // namespace ds
