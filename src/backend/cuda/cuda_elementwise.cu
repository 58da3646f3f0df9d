// Row-wise and elementwise kernels: embedding, RMSNorm, add, SiLU-and-mul, RoPE, the KV-cache store, row
// gathers and dtype conversions. Straightforward first versions: one thread per element, fp32 arithmetic.
#include "backend/cuda/cuda_common.cuh"

namespace ds::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(DeviceWeight table, const int32_t* ids, MatrixRef out) {
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t];
  for (int64_t c = threadIdx.x; c < out.cols; c += blockDim.x) store_at(out, t, c, weight_at(table, id, c));
}

// With branch.data set, x[r, :] += branch[r, :] first (the fused residual add): each thread reads back only
// the elements it wrote itself.
__global__ void rms_norm_kernel(MatrixRef x, MatrixRef branch, DeviceWeight weight, float eps, MatrixRef out) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < x.cols; c += blockDim.x) {
    float v = load_at(x, r, c);
    if (branch.data != nullptr) {
      v += load_at(branch, r, c);
      store_at(x, r, c, v);
    }
    sum += v * v;
  }
  sum = block_sum(sum, shared);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(x.cols) + eps);
  for (int64_t c = threadIdx.x; c < x.cols; c += blockDim.x)
    store_at(out, r, c, weight_at(weight, 0, c) * (load_at(x, r, c) * inv));
}

__global__ void add_kernel(MatrixRef acc, MatrixRef x) {
  const int64_t n = acc.rows * acc.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / acc.cols, c = i % acc.cols;
    store_at(acc, r, c, load_at(acc, r, c) + load_at(x, r, c));
  }
}

__global__ void silu_mul_kernel(MatrixRef gate, MatrixRef up, MatrixRef out) {
  const int64_t n = out.rows * out.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / out.cols, c = i % out.cols;
    const float g = load_at(gate, r, c);
    store_at(out, r, c, g / (1.0f + expf(-g)) * load_at(up, r, c));
  }
}

__global__ void rope_kernel(MatrixRef x, const int32_t* positions, int64_t num_heads, int64_t head_dim,
                            int64_t rope_offset, const float* inv_freq, int64_t half,
                            float attention_factor) {
  const int64_t t = blockIdx.x;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t item = threadIdx.x; item < num_heads * half; item += blockDim.x) {
    const int64_t h = item / half, i = item % half;
    // fp32 angle = fp32 position * fp32 inv_freq, as HF and the CPU backend compute it.
    const float angle = pos * inv_freq[i];
    const float c = cosf(angle) * attention_factor, s = sinf(angle) * attention_factor;
    const int64_t col = h * head_dim + rope_offset + 2 * i;
    const float a = load_at(x, t, col), b = load_at(x, t, col + 1);
    store_at(x, t, col, a * c - b * s);
    store_at(x, t, col + 1, b * c + a * s);
  }
}

__global__ void store_kv_kernel(MatrixRef latent, MatrixRef k_rope, const int64_t* slots, MatrixRef cache) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0) return;  // a padding row: nothing stored
  for (int64_t c = threadIdx.x; c < cache.cols; c += blockDim.x) {
    const float v = c < latent.cols ? load_at(latent, t, c) : load_at(k_rope, t, c - latent.cols);
    store_at(cache, slot, c, v);
  }
}

__global__ void gather_rows_kernel(MatrixRef x, const int32_t* rows, MatrixRef out) {
  const int64_t i = blockIdx.x;
  const int64_t r = rows[i];
  for (int64_t c = threadIdx.x; c < out.cols; c += blockDim.x) store_at(out, i, c, load_at(x, r, c));
}

__global__ void convert_kernel(MatrixRef x, MatrixRef out) {
  const int64_t n = out.rows * out.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / out.cols, c = i % out.cols;
    store_at(out, r, c, load_at(x, r, c));
  }
}

__global__ void split_bf16_kernel(MatrixRef x, MatrixRef hi, MatrixRef lo) {
  const int64_t n = x.rows * x.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / x.cols, c = i % x.cols;
    const float v = load_at(x, r, c);
    const float h = __bfloat162float(__float2bfloat16_rn(v));
    store_at(hi, r, c, h);
    store_at(lo, r, c, v - h);
  }
}

__global__ void weight_to_bf16_kernel(DeviceWeight w, __nv_bfloat16* out) {
  const int64_t n = w.rows * w.cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __float2bfloat16_rn(weight_at(w, i / w.cols, i % w.cols));
}

constexpr int kTile = 16;

__global__ void gemm_bf16_fallback_kernel(const __nv_bfloat16* x, int64_t ldx, const __nv_bfloat16* w,
                                          int64_t ldw, int64_t k, MatrixRef out) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int64_t row = blockIdx.y * int64_t{kTile} + threadIdx.y;  // token
  const int64_t col = blockIdx.x * int64_t{kTile} + threadIdx.x;  // output feature
  const int64_t w_row = blockIdx.x * int64_t{kTile} + threadIdx.y;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t kk = k0 + threadIdx.x;
    xs[threadIdx.y][threadIdx.x] = row < out.rows && kk < k ? __bfloat162float(x[row * ldx + kk]) : 0.0f;
    ws[threadIdx.y][threadIdx.x] = w_row < out.cols && kk < k ? __bfloat162float(w[w_row * ldw + kk]) : 0.0f;
    __syncthreads();
    for (int j = 0; j < kTile; ++j) acc += xs[threadIdx.y][j] * ws[threadIdx.x][j];
    __syncthreads();
  }
  if (row < out.rows && col < out.cols) store_at(out, row, col, acc);
}

unsigned int grid_stride_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

unsigned int row_threads(int64_t cols) {
  return cols >= kThreads ? kThreads : static_cast<unsigned int>((cols + 31) / 32 * 32);
}

}  // namespace

void launch_embedding(const DeviceWeight& table, const int32_t* ids, MatrixRef out, cudaStream_t stream) {
  if (out.rows == 0) return;
  embedding_kernel<<<static_cast<unsigned int>(out.rows), row_threads(out.cols), 0, stream>>>(table, ids,
                                                                                              out);
}

void launch_rms_norm(MatrixRef x, const DeviceWeight& weight, float eps, MatrixRef out, cudaStream_t stream) {
  if (out.rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned int>(out.rows), kThreads, 0, stream>>>(x, MatrixRef{}, weight, eps, out);
}

void launch_add_rms_norm(MatrixRef residual, MatrixRef branch, const DeviceWeight& weight, float eps, MatrixRef out,
                         cudaStream_t stream) {
  if (out.rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned int>(out.rows), kThreads, 0, stream>>>(residual, branch, weight, eps,
                                                                                 out);
}

void launch_add(MatrixRef acc, MatrixRef x, cudaStream_t stream) {
  if (acc.rows * acc.cols == 0) return;
  add_kernel<<<grid_stride_blocks(acc.rows * acc.cols), kThreads, 0, stream>>>(acc, x);
}

void launch_silu_mul(MatrixRef gate, MatrixRef up, MatrixRef out, cudaStream_t stream) {
  if (out.rows * out.cols == 0) return;
  silu_mul_kernel<<<grid_stride_blocks(out.rows * out.cols), kThreads, 0, stream>>>(gate, up, out);
}

void launch_rope(MatrixRef x, const int32_t* positions, int64_t num_heads, int64_t head_dim,
                 int64_t rope_offset, const float* inv_freq, int64_t half, float attention_factor,
                 cudaStream_t stream) {
  if (x.rows == 0 || half == 0) return;
  rope_kernel<<<static_cast<unsigned int>(x.rows), row_threads(num_heads * half), 0, stream>>>(
      x, positions, num_heads, head_dim, rope_offset, inv_freq, half, attention_factor);
}

void launch_store_kv(MatrixRef latent, MatrixRef k_rope, const int64_t* slots, MatrixRef cache,
                     cudaStream_t stream) {
  if (latent.rows == 0) return;
  store_kv_kernel<<<static_cast<unsigned int>(latent.rows), row_threads(cache.cols), 0, stream>>>(
      latent, k_rope, slots, cache);
}

void launch_gather_rows(MatrixRef x, const int32_t* rows, MatrixRef out, cudaStream_t stream) {
  if (out.rows == 0) return;
  gather_rows_kernel<<<static_cast<unsigned int>(out.rows), row_threads(out.cols), 0, stream>>>(x, rows, out);
}

void launch_convert(MatrixRef x, MatrixRef out, cudaStream_t stream) {
  if (out.rows * out.cols == 0) return;
  convert_kernel<<<grid_stride_blocks(out.rows * out.cols), kThreads, 0, stream>>>(x, out);
}

void launch_split_bf16(MatrixRef x, MatrixRef hi, MatrixRef lo, cudaStream_t stream) {
  if (x.rows * x.cols == 0) return;
  split_bf16_kernel<<<grid_stride_blocks(x.rows * x.cols), kThreads, 0, stream>>>(x, hi, lo);
}

void launch_weight_to_bf16(const DeviceWeight& w, void* out, cudaStream_t stream) {
  if (w.rows * w.cols == 0) return;
  weight_to_bf16_kernel<<<grid_stride_blocks(w.rows * w.cols), kThreads, 0, stream>>>(
      w, static_cast<__nv_bfloat16*>(out));
}

void launch_gemm_bf16_fallback(const void* x, int64_t ldx, const void* w, int64_t ldw, int64_t k,
                               MatrixRef out, cudaStream_t stream) {
  if (out.rows * out.cols == 0) return;
  const dim3 block(kTile, kTile);
  const dim3 grid(blocks_for(out.cols, kTile), blocks_for(out.rows, kTile));
  gemm_bf16_fallback_kernel<<<grid, block, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), ldx,
                                                        static_cast<const __nv_bfloat16*>(w), ldw, k, out);
}

}  // namespace ds::cuda
