#include "cli/parallel_flags.h"

namespace ds::cli {

void add_parallel_flags(CLI::App& cmd, ParallelOptions& o) {
  cmd.add_option("--tensor-parallel-size,--tp-size,--tp", o.tensor_parallel_size,
                 "Ranks the attention heads and MLPs are split over (--device cpu in this version)")
      ->check(CLI::Range(1, 64));
  cmd.add_flag("--enable-expert-parallel", o.enable_expert_parallel,
               "Place the routed experts whole on the ranks (n_routed_experts / ranks each) instead of slicing each");
  cmd.add_option("--dist-timeout", o.dist_timeout_s,
                 "Seconds a rank may take to reach a collective before the whole group ends")
      ->check(CLI::PositiveNumber);
}

}  // namespace ds::cli
