// The collectives the parallel layouts need (DESIGN.md, Parallelism): one Communicator per rank of a group.
//
// Every call is collective: every rank of the group makes the same calls in the same order with the same
// shapes, and each returns when the rank's own result is complete. Tensors are the rank's backend's: host
// memory for the CPU backend (HostCommunicator: ranks are threads of one process), device memory for the CUDA
// backend (NCCL). Sums add the ranks' values in rank order 0, 1, ..., size - 1 where the implementation
// controls the order (the host one does), so every rank gets bit-identical results.
//
// A rank that does not arrive at a collective within the group's timeout ends it for everyone: every waiting
// rank throws CollectiveError naming the rank(s) missing and the collective; so does every later call (the
// group is dead: DESIGN.md "a dead, hung or failing rank ends the whole group"). Never a silent hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "backend/tensor.h"
#include "util/check.h"

namespace ds {

// A collective that failed or timed out; the group is unusable afterwards.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;

  // t = sum over ranks of t (elementwise), in place.
  virtual void all_reduce(Tensor& t) = 0;
  // out = the ranks' `in` concatenated along rows: out [size * in.rows, in.cols], rank r's rows at r *
  // in.rows.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // out = rows [rank * out.rows, (rank + 1) * out.rows) of the sum over ranks of in [size * out.rows, cols].
  virtual void reduce_scatter(const Tensor& in, Tensor& out) = 0;
  // Rows of in go to ranks in order: send_rows[r] rows to rank r (starting at row sum(send_rows[:r])); out
  // receives recv_rows[r] rows from rank r in rank order. recv_rows[r] must equal what rank r sends here.
  virtual void all_to_all_v(const Tensor& in, std::span<const int64_t> send_rows, Tensor& out,
                            std::span<const int64_t> recv_rows) = 0;
  // t = root's t.
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Ends the group from this rank (it failed outside a collective): every rank's current and later
  // collectives throw CollectiveError with `why`, instead of waiting out the timeout.
  virtual void abort(const std::string& why) = 0;
};

// World size 1: every collective is the identity (no copies), as DESIGN.md asks of one device.
class SingleCommunicator final : public Communicator {
 public:
  [[nodiscard]] int rank() const override { return 0; }
  [[nodiscard]] int size() const override { return 1; }
  void all_reduce(Tensor&) override {}
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out) override;
  void all_to_all_v(const Tensor& in, std::span<const int64_t> send_rows, Tensor& out,
                    std::span<const int64_t> recv_rows) override;
  void broadcast(Tensor&, int root) override;
  void barrier() override {}
  void abort(const std::string&) override {}
};

// The ranks of a HostCommunicator group: threads of one process, each with host-memory tensors (the CPU
// backend's). make() returns one communicator per rank; rank r's must be used by one thread at a time.
class HostGroup {
 public:
  static std::vector<std::unique_ptr<Communicator>> make(int size, std::chrono::milliseconds timeout);
};

}  // namespace ds
