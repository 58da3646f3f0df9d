// CudaBackend's step buffers and CUDA graphs. A graph records a whole step (DeepseekModel's decode graphs):
// every kernel, cuBLASLt call and stream-ordered allocation queued between begin_capture and end_capture. It
// keeps the addresses it saw: the step buffers (stage_step), the scratch buffers, the KV cache, the weights
// and whatever tensors the caller passed in; so from the first capture on, the step and scratch buffers no
// longer move (they may still grow beside the old ones, which stay for the graphs).
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds {

void CudaBackend::stage_step(const ForwardBatch& batch, int32_t table_pitch) {
  ctx_->step.begin(batch, table_pitch, ctx_->stream);
}

void CudaBackend::unstage_step() {
  ctx_->step.end();
}

bool CudaBackend::supports_graphs() const {
  return !ctx_->sync_each_op;
}

void CudaBackend::begin_capture() {
  DS_CHECK(supports_graphs(),
           "graphs cannot be captured with DEEPSERVE_CUDA_SYNC (it synchronizes every op)");
  synchronize();
  ctx_->step.freeze();
  for (cuda::Scratch* s : ctx_->scratches()) s->keep_addresses();
  (void)cudaGetLastError();
  // Thread-local: another thread's CUDA calls (weight readers, NVML) neither break nor join the recording.
  DS_CUDA_CHECK(cudaStreamBeginCapture(ctx_->stream, cudaStreamCaptureModeThreadLocal));
}

int64_t CudaBackend::end_capture() {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(ctx_->stream, &graph);
  if (ended != cudaSuccess || graph == nullptr) {
    (void)cudaGetLastError();  // capture errors are not sticky: the stream and context stay usable
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    throw InternalError(
        fmt::format("CUDA graph capture failed: {} ({}); an op copied to the host or synchronized",
                    cudaGetErrorName(ended), cudaGetErrorString(ended)));
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiateWithFlags(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable graph keeps what it needs
  DS_CUDA_CHECK(made);
  // Upload now, so the first replay does not pay for it and the graph's memory is reserved at start-up.
  DS_CUDA_CHECK(cudaGraphUpload(exec, ctx_->stream));
  ctx_->graphs.push_back(exec);
  return static_cast<int64_t>(ctx_->graphs.size()) - 1;
}

void CudaBackend::replay_graph(int64_t graph) {
  DS_CHECK(graph >= 0 && graph < static_cast<int64_t>(ctx_->graphs.size()) &&
               ctx_->graphs[static_cast<size_t>(graph)] != nullptr,
           "no captured graph {}", graph);
  DS_CUDA_CHECK(cudaGraphLaunch(ctx_->graphs[static_cast<size_t>(graph)], ctx_->stream));
  ctx_->after_op("replay_graph");
}

void CudaBackend::clear_graphs() {
  synchronize();
  for (cudaGraphExec_t& g : ctx_->graphs) {
    if (g != nullptr) DS_CUDA_CHECK(cudaGraphExecDestroy(g));
    g = nullptr;
  }
  // The memory the graphs' allocations reserved goes back to the driver.
  DS_CUDA_CHECK(cudaDeviceGraphMemTrim(ctx_->device));
}

int64_t CudaBackend::graph_memory_bytes() {
  uint64_t reserved = 0;
  DS_CUDA_CHECK(cudaDeviceGetGraphMemAttribute(ctx_->device, cudaGraphMemAttrReservedMemCurrent, &reserved));
  return static_cast<int64_t>(reserved);
}

}  // namespace ds
