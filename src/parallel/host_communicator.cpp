// HostGroup: the collectives between threads of one process over host memory (the CPU backend's ranks in CI).
//
// Each collective is two barriers. At the first every rank publishes its buffers (and the group checks that
// all ranks called the same collective with agreeing shapes); between them each rank reads the others'
// inputs and computes its own result into scratch; after the second, when nobody reads inputs any more, it
// writes the result to its output (which may be its input: all_reduce is in place). Sums run in rank order,
// so all ranks get the same bits.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "parallel/communicator.h"

namespace ds {
namespace {

// What one rank brought to the current collective.
struct Slot {
  const char* op = nullptr;
  const void* in = nullptr;
  int64_t in_rows = 0, cols = 0;
  DType dtype = DType::kF32;
  std::span<const int64_t> send_rows;
  int root = 0;
};

struct GroupState {
  int size = 0;
  std::chrono::milliseconds timeout{0};
  std::mutex mu;
  std::condition_variable cv;
  int64_t generation = 0;     // barriers passed
  std::vector<char> arrived;  // per rank, for the current barrier
  int count = 0;
  std::string death;  // non-empty: the group is dead, and why
  std::vector<Slot> slots;

  // Waits until every rank has arrived; throws CollectiveError on a timeout or a dead group.
  void wait_all(int rank, const char* what) {
    std::unique_lock lock(mu);
    if (!death.empty()) throw CollectiveError(death);
    const int64_t gen = generation;
    arrived[static_cast<size_t>(rank)] = 1;
    if (++count == size) {
      count = 0;
      std::fill(arrived.begin(), arrived.end(), 0);
      ++generation;
      cv.notify_all();
      return;
    }
    const bool done = cv.wait_for(lock, timeout, [&] { return generation != gen || !death.empty(); });
    if (!death.empty()) throw CollectiveError(death);
    if (done) return;
    std::string missing;
    for (int r = 0; r < size; ++r)
      if (!arrived[static_cast<size_t>(r)]) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", r);
    death = fmt::format("rank(s) {} of {} did not reach {} within {} ms (--dist-timeout)", missing, size,
                        what, timeout.count());
    cv.notify_all();
    throw CollectiveError(death);
  }

  void end(const std::string& why) {
    {
      const std::lock_guard lock(mu);
      if (death.empty()) death = why;
    }
    cv.notify_all();
  }

  void fail(const std::string& why) {
    end(why);
    throw CollectiveError(why);
  }
};

size_t elem_size(DType d) {
  return dtype_size(d);
}

void add_into(void* acc, const void* x, int64_t n, DType dtype) {
  if (dtype == DType::kF32) {
    float* a = static_cast<float*>(acc);
    const float* b = static_cast<const float*>(x);
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  } else if (dtype == DType::kI32) {
    int32_t* a = static_cast<int32_t*>(acc);
    const int32_t* b = static_cast<const int32_t*>(x);
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  } else {
    DS_CHECK(false, "host all_reduce of {} tensors (F32 and I32 only)", dtype_name(dtype));
  }
}

class HostCommunicator final : public Communicator {
 public:
  HostCommunicator(std::shared_ptr<GroupState> g, int rank) : g_(std::move(g)), rank_(rank) {}
  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return g_->size; }

  void all_reduce(Tensor& t) override {
    publish("all_reduce", t, t.rows(), {});
    const size_t bytes = static_cast<size_t>(t.numel()) * elem_size(t.dtype);
    scratch_.resize(bytes);
    std::memcpy(scratch_.data(), g_->slots[0].in, bytes);
    for (int r = 1; r < size(); ++r)
      add_into(scratch_.data(), g_->slots[static_cast<size_t>(r)].in, t.numel(), t.dtype);
    g_->wait_all(rank_, "all_reduce (results)");
    std::memcpy(t.data, scratch_.data(), bytes);
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    DS_CHECK(out.rows() == size() * in.rows() && out.cols() == in.cols() && out.dtype == in.dtype,
             "all_gather: out [{}, {}] for {} ranks of [{}, {}]", out.rows(), out.cols(), size(), in.rows(),
             in.cols());
    publish("all_gather", in, in.rows(), {});
    const size_t part = static_cast<size_t>(in.numel()) * elem_size(in.dtype);
    scratch_.resize(part * static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r)
      std::memcpy(scratch_.data() + part * static_cast<size_t>(r), g_->slots[static_cast<size_t>(r)].in,
                  part);
    g_->wait_all(rank_, "all_gather (results)");
    std::memcpy(out.data, scratch_.data(), scratch_.size());
  }

  void reduce_scatter(const Tensor& in, Tensor& out) override {
    DS_CHECK(in.rows() == size() * out.rows() && out.cols() == in.cols() && out.dtype == in.dtype,
             "reduce_scatter: in [{}, {}] for {} ranks of [{}, {}]", in.rows(), in.cols(), size(), out.rows(),
             out.cols());
    publish("reduce_scatter", in, in.rows(), {});
    const size_t esz = elem_size(in.dtype);
    const size_t offset = static_cast<size_t>(rank_ * out.numel()) * esz,
                 bytes = static_cast<size_t>(out.numel()) * esz;
    scratch_.resize(bytes);
    std::memcpy(scratch_.data(), static_cast<const char*>(g_->slots[0].in) + offset, bytes);
    for (int r = 1; r < size(); ++r)
      add_into(scratch_.data(), static_cast<const char*>(g_->slots[static_cast<size_t>(r)].in) + offset,
               out.numel(), in.dtype);
    g_->wait_all(rank_, "reduce_scatter (results)");
    std::memcpy(out.data, scratch_.data(), bytes);
  }

  void all_to_all_v(const Tensor& in, std::span<const int64_t> send_rows, Tensor& out,
                    std::span<const int64_t> recv_rows) override {
    DS_CHECK(static_cast<int>(send_rows.size()) == size() && static_cast<int>(recv_rows.size()) == size(),
             "all_to_all_v: {} send and {} receive counts for {} ranks", send_rows.size(), recv_rows.size(),
             size());
    int64_t sent = 0, received = 0;
    for (int r = 0; r < size(); ++r)
      sent += send_rows[static_cast<size_t>(r)], received += recv_rows[static_cast<size_t>(r)];
    DS_CHECK(sent == in.rows() && received == out.rows() && in.cols() == out.cols() && in.dtype == out.dtype,
             "all_to_all_v: sends {} of {} rows, receives {} into {}", sent, in.rows(), received, out.rows());
    publish("all_to_all_v", in, in.rows(), send_rows);
    // Rank r's block for us starts after what it sends to ranks before us.
    const size_t row_bytes = static_cast<size_t>(in.cols()) * elem_size(in.dtype);
    scratch_.resize(static_cast<size_t>(out.rows()) * row_bytes);
    size_t at = 0;
    for (int r = 0; r < size(); ++r) {
      const Slot& s = g_->slots[static_cast<size_t>(r)];
      int64_t first = 0;
      for (int q = 0; q < rank_; ++q) first += s.send_rows[static_cast<size_t>(q)];
      const int64_t n = s.send_rows[static_cast<size_t>(rank_)];
      if (n != recv_rows[static_cast<size_t>(r)])
        g_->fail(fmt::format("all_to_all_v: rank {} expects {} rows from rank {}, which sends {}", rank_,
                             recv_rows[static_cast<size_t>(r)], r, n));
      std::memcpy(scratch_.data() + at,
                  static_cast<const char*>(s.in) + static_cast<size_t>(first) * row_bytes,
                  static_cast<size_t>(n) * row_bytes);
      at += static_cast<size_t>(n) * row_bytes;
    }
    g_->wait_all(rank_, "all_to_all_v (results)");
    std::memcpy(out.data, scratch_.data(), scratch_.size());
  }

  void broadcast(Tensor& t, int root) override {
    DS_CHECK(root >= 0 && root < size(), "broadcast from rank {} of {}", root, size());
    publish("broadcast", t, t.rows(), {}, root);
    const size_t bytes = static_cast<size_t>(t.numel()) * elem_size(t.dtype);
    scratch_.resize(bytes);
    std::memcpy(scratch_.data(), g_->slots[static_cast<size_t>(root)].in, bytes);
    g_->wait_all(rank_, "broadcast (results)");
    if (rank_ != root) std::memcpy(t.data, scratch_.data(), bytes);
  }

  void barrier() override { g_->wait_all(rank_, "barrier"); }

  void abort(const std::string& why) override { g_->end(fmt::format("rank {} failed: {}", rank_, why)); }

 private:
  // Puts this rank's buffers in its slot and waits for every rank; then checks that all ranks called the same
  // collective with the same shape (rank 0's), so a mismatched call order fails loudly instead of mixing
  // data.
  void publish(const char* op, const Tensor& in, int64_t rows, std::span<const int64_t> send_rows,
               int root = 0) {
    {
      const std::lock_guard lock(g_->mu);
      g_->slots[static_cast<size_t>(rank_)] = Slot{op, in.data, rows, in.cols(), in.dtype, send_rows, root};
    }
    g_->wait_all(rank_, op);
    const Slot& mine = g_->slots[static_cast<size_t>(rank_)];
    for (int r = 0; r < size(); ++r) {
      const Slot& s = g_->slots[static_cast<size_t>(r)];
      const bool same_shape = std::strcmp(op, "all_to_all_v") == 0
                                  ? s.cols == mine.cols
                                  : s.cols == mine.cols && s.in_rows == mine.in_rows;
      if (std::strcmp(s.op, op) != 0 || s.dtype != mine.dtype || !same_shape || s.root != mine.root)
        g_->fail(fmt::format("rank {} called {} [{}, {}] while rank {} called {} [{}, {}]", r, s.op,
                             s.in_rows, s.cols, rank_, op, mine.in_rows, mine.cols));
    }
  }

  std::shared_ptr<GroupState> g_;
  int rank_;
  std::vector<char> scratch_;
};

}  // namespace

void SingleCommunicator::all_gather(const Tensor& in, Tensor& out) {
  DS_CHECK(out.numel() == in.numel() && out.dtype == in.dtype, "all_gather of one rank: shapes differ");
  if (out.data != in.data)
    std::memcpy(out.data, in.data, static_cast<size_t>(in.numel()) * dtype_size(in.dtype));
}

void SingleCommunicator::reduce_scatter(const Tensor& in, Tensor& out) {
  all_gather(in, out);
}

void SingleCommunicator::all_to_all_v(const Tensor& in, std::span<const int64_t> send_rows, Tensor& out,
                                      std::span<const int64_t> recv_rows) {
  DS_CHECK(send_rows.size() == 1 && recv_rows.size() == 1 && send_rows[0] == recv_rows[0] &&
               send_rows[0] == in.rows(),
           "all_to_all_v of one rank: counts differ");
  all_gather(in, out);
}

void SingleCommunicator::broadcast(Tensor&, int root) {
  DS_CHECK(root == 0, "broadcast from rank {} of 1", root);
}

std::vector<std::unique_ptr<Communicator>> HostGroup::make(int size, std::chrono::milliseconds timeout) {
  DS_CHECK(size >= 1, "a group of {} ranks", size);
  auto g = std::make_shared<GroupState>();
  g->size = size;
  g->timeout = timeout;
  g->arrived.assign(static_cast<size_t>(size), 0);
  g->slots.resize(static_cast<size_t>(size));
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<HostCommunicator>(g, r));
  return out;
}

}  // namespace ds
