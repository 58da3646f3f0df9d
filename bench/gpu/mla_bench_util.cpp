#include "gpu/mla_bench_util.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "io/dtype.h"

namespace ds::bench {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  const size_t distinct = std::min(n, size_t{1} << 20);
  for (size_t i = 0; i < distinct; ++i) v[i] = dist(rng);
  for (size_t i = distinct; i < n; ++i) v[i] = v[i % distinct];
  return v;
}

std::unique_ptr<HostKvB> random_kv_b_proj(int64_t heads, uint32_t seed, std::string name) {
  auto w = std::make_unique<HostKvB>();
  const int64_t rows = heads * (kMlaNope + kMlaV);
  const std::vector<float> f =
      random_floats(static_cast<size_t>(rows * kMlaLora), seed, 1.0f / std::sqrt(static_cast<float>(kMlaLora)));
  w->bytes.resize(f.size());
  for (size_t i = 0; i < f.size(); ++i) w->bytes[i] = f32_to_bf16(f[i]);
  w->view.name = std::move(name);
  w->view.dtype = DType::kBF16;
  w->view.shape = {rows, kMlaLora};
  w->view.data = reinterpret_cast<const std::byte*>(w->bytes.data());
  w->view.nbytes = w->bytes.size() * sizeof(uint16_t);
  w->weight = Weight{&w->view, nullptr, rows, kMlaLora, 0, 0};
  return w;
}

}  // namespace ds::bench
