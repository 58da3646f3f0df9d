// Return-code checks for the CUDA runtime and cuBLASLt: every call goes through one of these, and a failure
// throws ds::InternalError naming the file, the line, the call and the library's own error string.
// Kernel launches are followed by DS_CUDA_CHECK_LAUNCH(), which picks up launch-configuration errors at once
// (errors inside a kernel surface at the next synchronizing call, or at once with DEEPSERVE_CUDA_SYNC=1).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace ds::cuda {

[[noreturn]] void cuda_failed(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void cublas_failed(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace ds::cuda

#define DS_CUDA_CHECK(call)                                                \
  do {                                                                     \
    const cudaError_t ds_cuda_status_ = (call);                            \
    if (ds_cuda_status_ != cudaSuccess) [[unlikely]]                       \
      ::ds::cuda::cuda_failed(ds_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define DS_CUBLAS_CHECK(call)                                                  \
  do {                                                                         \
    const cublasStatus_t ds_cublas_status_ = (call);                           \
    if (ds_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]               \
      ::ds::cuda::cublas_failed(ds_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define DS_CUDA_CHECK_LAUNCH() DS_CUDA_CHECK(cudaGetLastError())
