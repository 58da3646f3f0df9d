// GPU metrics: NVML is loaded at run time and its absence (no library, or a library without its entry
// points) leaves /metrics without GPU series rather than failing; the series' names and labels as exported.
#include "server/gpu_metrics.h"

#include <gtest/gtest.h>

#include "server/metrics.h"
#include "server_harness.h"

namespace ds::server {
namespace {

TEST(GpuMetricsTest, MissingLibraryIsReportedNotThrown) {
  const GpuMonitor monitor("libnvidia-ml-does-not-exist.so.1");
  EXPECT_FALSE(monitor.available());
  EXPECT_NE(monitor.error().find("cannot load libnvidia-ml-does-not-exist.so.1"), std::string::npos)
      << monitor.error();
  EXPECT_TRUE(monitor.sample().empty());
  EXPECT_EQ(monitor.device_count(), 0);
}

TEST(GpuMetricsTest, LibraryWithoutNvmlIsReportedNotCalled) {
  // A library that loads but is not NVML: its missing entry point is named, nothing is called.
  const GpuMonitor monitor("libc.so.6");
  EXPECT_FALSE(monitor.available());
  EXPECT_EQ(monitor.error(), "libc.so.6 has no nvmlInit_v2");
  EXPECT_TRUE(monitor.sample().empty());
}

// On a machine with the driver this reads the real GPUs; here (no driver) it must say why it cannot.
TEST(GpuMetricsTest, DefaultLibraryEitherSamplesEveryGpuOrSaysWhy) {
  const GpuMonitor monitor;
  if (!monitor.available()) {
    EXPECT_FALSE(monitor.error().empty());
    GTEST_SKIP() << "no NVML here: " << monitor.error();
  }
  const auto samples = monitor.sample();
  ASSERT_EQ(static_cast<int>(samples.size()), monitor.device_count());
  for (const auto& s : samples) {
    EXPECT_GT(s.memory_total_bytes, 0u);
    EXPECT_LE(s.memory_used_bytes, s.memory_total_bytes);
    EXPECT_LE(s.utilization_perc, 100.0);
  }
}

TEST(GpuMetricsTest, SeriesPerGpuWithItsLabel) {
  const std::vector<GpuSample> gpus = {{0, 37.0, 1000, 8000}, {1, 0.0, 0, 8000}};
  MetricsInput in;
  in.model_name = "m";
  in.gpus = &gpus;
  const std::string text = render_metrics(in);
  for (const char* line : {"# TYPE deepserve:gpu_utilization_perc gauge",
                           "deepserve:gpu_utilization_perc{model_name=\"m\",gpu=\"0\"} 37\n",
                           "deepserve:gpu_utilization_perc{model_name=\"m\",gpu=\"1\"} 0\n",
                           "# TYPE deepserve:gpu_memory_used_bytes gauge",
                           "deepserve:gpu_memory_used_bytes{model_name=\"m\",gpu=\"0\"} 1000\n",
                           "deepserve:gpu_memory_total_bytes{model_name=\"m\",gpu=\"1\"} 8000\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
  const std::vector<GpuSample> none;
  in.gpus = &none;
  EXPECT_EQ(render_metrics(in).find("gpu_"), std::string::npos);
}

// The CPU server exports no GPU series.
TEST(GpuMetricsTest, CpuServerHasNoGpuSeries) {
  testing::ServerHarness h;
  const auto r = testing::http(h.port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find("deepserve:gpu_"), std::string::npos);
  EXPECT_NE(r.body.find("deepserve:batch_wait_time_seconds_count"), std::string::npos);
}

}  // namespace
}  // namespace ds::server
