// The host collectives between threads (HostGroup), against sums and layouts worked out by hand, and the
// group's behaviour when a rank calls the wrong collective or never arrives.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "parallel/communicator.h"

namespace ds {
namespace {

using std::chrono::milliseconds;

// Runs body(rank, communicator) on one thread per rank; returns each rank's exception message ("" if none).
std::vector<std::string> run_ranks(int size, milliseconds timeout,
                                   const std::function<void(int, Communicator&)>& body) {
  auto comms = HostGroup::make(size, timeout);
  std::vector<std::string> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r, *comms[static_cast<size_t>(r)]);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

Tensor filled(CpuBackend& cpu, std::vector<int64_t> shape, const std::function<float(int64_t)>& f) {
  Tensor t = cpu.empty(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = f(i);
  return t;
}

std::vector<float> values(const Tensor& t) {
  return {t.f32(), t.f32() + t.numel()};
}

TEST(HostGroup, AllReduceSumsEveryRanksValuesOnEveryRank) {
  CpuBackend cpu{1};
  for (int size : {1, 2, 3, 4}) {
    std::vector<std::vector<float>> got(static_cast<size_t>(size));
    const auto errors = run_ranks(size, milliseconds(5000), [&](int r, Communicator& c) {
      Tensor t = filled(cpu, {2, 3}, [&](int64_t i) { return float(100 * r + i); });
      c.all_reduce(t);
      got[static_cast<size_t>(r)] = values(t);
    });
    // Element i: sum over r of 100 r + i = 100 * size (size - 1) / 2 + size * i.
    for (int r = 0; r < size; ++r) {
      EXPECT_EQ(errors[static_cast<size_t>(r)], "");
      for (int64_t i = 0; i < 6; ++i)
        EXPECT_EQ(got[static_cast<size_t>(r)][static_cast<size_t>(i)],
                  float(50 * size * (size - 1) + size * i));
    }
  }
}

TEST(HostGroup, AllGatherReduceScatterBroadcast) {
  CpuBackend cpu{1};
  std::vector<std::vector<float>> gathered(3), scattered(3), broadcast(3);
  const auto errors = run_ranks(3, milliseconds(5000), [&](int r, Communicator& c) {
    // all_gather: rank r contributes one row [r, r + 0.5].
    Tensor in = filled(cpu, {1, 2}, [&](int64_t i) { return float(r) + 0.5f * float(i); });
    Tensor out = cpu.empty({3, 2});
    c.all_gather(in, out);
    gathered[static_cast<size_t>(r)] = values(out);
    // reduce_scatter: every rank holds rows [1, 2, 3] * (r + 1); rank r keeps row r of the sum (x6).
    Tensor full = filled(cpu, {3, 1}, [&](int64_t i) { return float(i + 1) * float(r + 1); });
    Tensor mine = cpu.empty({1, 1});
    c.reduce_scatter(full, mine);
    scattered[static_cast<size_t>(r)] = values(mine);
    Tensor b = filled(cpu, {1, 2}, [&](int64_t i) { return r == 2 ? 7.0f + float(i) : -1.0f; });
    c.broadcast(b, 2);
    broadcast[static_cast<size_t>(r)] = values(b);
    c.barrier();
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(errors[static_cast<size_t>(r)], "");
    EXPECT_EQ(gathered[static_cast<size_t>(r)], (std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f}));
    EXPECT_EQ(scattered[static_cast<size_t>(r)], (std::vector<float>{6.0f * float(r + 1)}));
    EXPECT_EQ(broadcast[static_cast<size_t>(r)], (std::vector<float>{7, 8}));
  }
}

TEST(HostGroup, AllToAllVSendsUnevenRowsInRankOrder) {
  CpuBackend cpu{1};
  // Rank s sends (s + d) % 3 rows to rank d, each row [10 s + d, k] for its k-th row to d.
  auto count = [](int s, int d) { return int64_t{(s + d) % 3}; };
  std::vector<std::vector<float>> got(3);
  const auto errors = run_ranks(3, milliseconds(5000), [&](int r, Communicator& c) {
    std::vector<int64_t> send(3), recv(3);
    std::vector<float> rows;
    for (int d = 0; d < 3; ++d) {
      send[static_cast<size_t>(d)] = count(r, d);
      recv[static_cast<size_t>(d)] = count(d, r);
      for (int64_t k = 0; k < count(r, d); ++k) rows.insert(rows.end(), {float(10 * r + d), float(k)});
    }
    Tensor in = filled(cpu, {static_cast<int64_t>(rows.size() / 2), 2},
                       [&](int64_t i) { return rows[static_cast<size_t>(i)]; });
    Tensor out = cpu.empty({recv[0] + recv[1] + recv[2], 2});
    c.all_to_all_v(in, send, out, recv);
    got[static_cast<size_t>(r)] = values(out);
  });
  // Rank 1 receives (0+1)%3 = 1 row from rank 0, (1+1)%3 = 2 from itself, (2+1)%3 = 0 from rank 2.
  EXPECT_EQ(errors[1], "");
  EXPECT_EQ(got[1], (std::vector<float>{1, 0, 11, 0, 11, 1}));
  // Rank 0: 0 from rank 0, 1 from rank 1 ([10, 0]), 2 from rank 2 ([20, 0], [20, 1]).
  EXPECT_EQ(got[0], (std::vector<float>{10, 0, 20, 0, 20, 1}));
}

TEST(HostGroup, DifferentCollectivesOnTwoRanksFailBothWithTheirNames) {
  CpuBackend cpu{1};
  const auto errors = run_ranks(2, milliseconds(5000), [&](int r, Communicator& c) {
    Tensor t = filled(cpu, {2, 2}, [](int64_t) { return 1.0f; });
    if (r == 0) {
      c.all_reduce(t);
    } else {
      Tensor out = cpu.empty({4, 2});
      c.all_gather(t, out);
    }
  });
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("all_reduce"), std::string::npos) << e;
    EXPECT_NE(e.find("all_gather"), std::string::npos) << e;
  }
}

TEST(HostGroup, ARankThatNeverArrivesEndsTheGroupWithinTheTimeoutNamingIt) {
  CpuBackend cpu{1};
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(3, milliseconds(300), [&](int r, Communicator& c) {
    if (r == 2) return;  // never calls: a hung or dead rank
    Tensor t = filled(cpu, {1, 1}, [](int64_t) { return 1.0f; });
    c.all_reduce(t);
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 2.0);
  EXPECT_EQ(errors[0], "rank(s) 2 of 3 did not reach all_reduce within 300 ms (--dist-timeout)");
  EXPECT_EQ(errors[1], errors[0]);
  EXPECT_EQ(errors[2], "");
}

}  // namespace
}  // namespace ds
