// Engine: continuous batching of many requests over one model.
//
// One thread runs step(): take new requests and aborts from the inbox -> Scheduler::schedule() -> swap/copy
// KV blocks -> ForwardBatch -> Model::forward -> sample each sequence whose tokens are all computed -> check
// stops -> push deltas to each request's stream -> free finished sequences. Other threads only submit() and
// abort(); everything else is owned by the step thread (tests call step() directly instead of start()).
//
// Failure: when step() throws on the engine thread (start()), the engine is dead: every request in flight or
// queued ends with finish_reason error, submit() throws EngineDeadError, and no further step runs. Its state
// after a fault cannot be trusted, so the process is expected to exit (dead() tells the server).
//
// Ownership: the engine owns Sequences (by request); Scheduler and BlockManager hold pointers to them, and a
// sequence leaves both before it is destroyed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/scheduler.h"
#include "engine/stats.h"
#include "model/runner.h"
#include "tokenizer/tokenizer.h"

namespace ds {

// The request is refused now and may succeed later (queue full): HTTP 503 with Retry-After.
class OverloadedError : public UserError {
 public:
  using UserError::UserError;
};

// The engine has failed (a step threw: a backend, device or communication fault) and serves nothing more; the
// process should exit so that a supervisor restarts it. HTTP 503.
class EngineDeadError : public Error {
 public:
  using Error::Error;
};

struct EngineConfig {
  SchedulerConfig scheduler;
  int32_t block_size = 16;
  int64_t num_gpu_blocks = 1024;  // device KV blocks
  int64_t num_cpu_blocks = 0;     // swap pool (--swap-space)
  bool enable_prefix_caching = true;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  int64_t max_queue_len = 1 << 20;
  // Fault injection for tests of the failure path: the step with this number (counting from 1, and only steps
  // that have work) throws, as a backend fault would, before it reads the inbox. 0: never. Set only by code
  // (tests, and `deepserve serve` from an environment variable of the operator's); no request can reach it.
  int64_t fail_at_step = 0;
  // Capture CUDA graphs of decode steps at construction, for batch sizes up to scheduler.max_num_seqs and
  // tables up to max_model_len (DeepseekModel::capture_decode_graphs); a backend without graphs ignores it.
  // `deepserve serve` and `generate` turn it on for --device cuda unless --enforce-eager.
  bool cuda_graphs = false;
  // Sample on the backend's device when it can (Backend::sample), copying back only the tokens and logprobs;
  // false copies every step's logits to the host and samples there (the reference, for tests).
  bool sample_on_device = true;
};

struct EngineRequest {
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
  int32_t priority = 0;
};

// One event on a request's stream: new tokens of one sample, or its end.
struct RequestDelta {
  int32_t index = 0;               // which of the request's n samples
  std::vector<int32_t> token_ids;  // tokens generated since the last delta
  std::string text;                // their text (whole UTF-8 characters; stop strings cut), with a tokenizer
  std::vector<SampledToken> logprobs;  // one per token when params.logprobs is set
  // Prompt log-probs (first delta of each sample, when params.prompt_logprobs is set); entry 0 is empty.
  std::vector<std::optional<SampledToken>> prompt_logprobs;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;
};

// The receiving end of one request: thread-safe, blocking.
class RequestStream {
 public:
  explicit RequestStream(int32_t num_samples) : open_samples_(num_samples) {}
  // Waits for the next delta; false once every sample has finished and all deltas were read.
  bool next(RequestDelta& out);
  // Non-blocking variant; false when nothing is queued right now.
  bool try_next(RequestDelta& out);
  [[nodiscard]] bool finished() const;
  // Called after every push (on the engine thread, so it must be quick: e.g. post work to an event loop),
  // and right away when deltas are already queued. Lets an asynchronous reader wait without a thread.
  void set_listener(std::function<void()> listener);

  void push(RequestDelta delta);  // engine side

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<RequestDelta> queue_;
  int32_t open_samples_;
  std::function<void()> listener_;
};

class Engine {
 public:
  // With a tokenizer, deltas carry text and stop strings are honoured; it must outlive the engine.
  Engine(ModelRunner& model, EngineConfig config, const tokenizer::Tokenizer* tokenizer = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates the request (InvalidArgument naming the field; OverloadedError when the queue is full) and
  // queues it. The id can be passed to abort().
  std::shared_ptr<RequestStream> submit(EngineRequest request, int64_t* request_id = nullptr);
  // Ends the request (every sample) with finish_reason abort; its blocks are freed in the next step.
  void abort(int64_t request_id);
  // Backpressure (a client that does not read): from the next step the request generates nothing until
  // resume(); its sequences keep their KV blocks unless the scheduler needs them for others (then they
  // recompute on resume). Any thread; calls apply in order; an unknown or finished request is ignored.
  void pause(int64_t request_id);
  void resume(int64_t request_id);

  void start();  // a thread running step() until stop(), or until a step throws (then the engine is dead)
  void stop();
  // True once a step on the engine thread has failed; failure() says why.
  [[nodiscard]] bool dead() const { return dead_.load(); }
  [[nodiscard]] std::string failure() const;
  // One iteration; returns false when there was nothing to do.
  bool step();
  [[nodiscard]] bool has_work() const;

  // A snapshot taken at the end of the last step (any thread may call it; it never reads the step thread's
  // state).
  [[nodiscard]] EngineStats stats() const;
  [[nodiscard]] const EngineConfig& config() const { return config_; }
  // What the decode-graph capture at construction did (nothing, with EngineConfig::cuda_graphs off).
  [[nodiscard]] const DecodeGraphSummary& decode_graphs() const { return decode_graphs_; }
  // BlockManager invariants over every live sequence, and no per-request state left behind by finished ones
  // (tests call it after each step).
  void check_invariants() const;

 private:
  struct RequestState {
    int64_t id = 0;
    std::shared_ptr<RequestStream> stream;
    std::vector<std::unique_ptr<Sequence>> seqs;  // seqs[0] computes the prompt; n > 1 forks the rest from it
    double arrival_time = 0.0;                    // submit()
    std::optional<double> first_token_time;
    bool scheduled = false;  // first scheduled yet (queue time observed)
    bool forked = false;
  };

  void drain_inbox();
  // Ends seq: frees its blocks and pushes its last delta (`last`, when the caller has one, else a new one),
  // carrying whatever text was still held back.
  void finish(RequestState& request, Sequence& seq, FinishReason reason, const std::string& error = {},
              RequestDelta* last = nullptr);
  void apply_block_moves(const SchedulerOutput& out);
  // After the forward pass: sample, check stops, emit. logits: [rows, vocab] on the backend. Rows are copied
  // to the host only where the step scores prompt tokens (echo) or the backend does not sample; otherwise the
  // backend samples every row on its device and only the tokens and their logprobs come back.
  void process_outputs(const SchedulerOutput& out, const std::vector<int32_t>& first_logit_row,
                       const Tensor& logits, bool scores_prompts);
  // One sequence that draws a token this step, from logits row `row`.
  struct PendingSample {
    Sequence* seq = nullptr;
    RequestState* request = nullptr;
    int32_t row = 0;
  };
  // The tokens of `pending`, each from its own generator: on the backend's device when it samples and
  // on_device, else on the host from host_logits_ (copied here if it is not yet).
  // errors[k] is not empty where pending[k]'s row yields no token (NaN logits, every token masked): that one
  // request fails (fail_request), the others carry on.
  [[nodiscard]] std::vector<SampledToken> sample_tokens(const std::vector<PendingSample>& pending,
                                                        const Tensor& logits, bool on_device,
                                                        std::vector<std::string>& errors);
  // Ends every open sample of one request with finish_reason error: a fault of that request's row, not of
  // the engine, which carries on.
  void fail_request(RequestState& request, const std::string& error);
  // Appends the sampled token to s, detokenizes, checks stops and pushes the delta.
  void emit_token(RequestState& request, Sequence& s, const SampledToken& token, double now);
  // n > 1: once sample 0 has computed the prompt, the other samples share its blocks (the partial last block
  // copied) and sample their first token from the same logits.
  void fork_samples(RequestState& request);
  // EOS, stop token ids, length. Stop strings are checked on the text, in process_outputs.
  [[nodiscard]] bool check_stop(Sequence& seq);
  // The engine thread after a failed step: marks the engine dead and ends every request, queued ones
  // included, with finish_reason error. Touches neither the scheduler nor the block manager, whose state the
  // failure may have left half-updated.
  void die(const std::string& error);
  // Copies the gauges (queues, KV usage, prefix cache, preemptions) into stats_; step thread only.
  void publish_gauges();

  ModelRunner& model_;
  EngineConfig config_;
  const tokenizer::Tokenizer* tokenizer_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::unordered_map<int64_t, RequestState> requests_;
  std::unordered_map<const Sequence*, RequestState*> owner_;
  std::unordered_map<int64_t, std::vector<std::optional<SampledToken>>> request_prompt_logprobs_;
  std::unordered_map<const Sequence*, double> last_token_time_;
  // Sequences ready to run but not in the batch (new, preempted, or a sample that could not share its
  // parent's blocks), and since when: batch_wait_time is observed when a step takes them in.
  std::unordered_map<const Sequence*, double> waiting_since_;
  Sampler sampler_;
  std::vector<float> host_logits_;  // this step's logits, copied from the backend when the host samples
  bool host_logits_valid_ = false;  // host_logits_ holds this step's logits

  mutable std::mutex inbox_mutex_;
  std::condition_variable inbox_cv_;
  std::vector<std::pair<int64_t, EngineRequest>> inbox_;
  std::vector<int64_t> aborts_;
  std::vector<std::pair<int64_t, bool>> pauses_;  // (request, paused), in the order asked
  // The stream and the submission time travel with the request through the inbox.
  struct Pending {
    std::shared_ptr<RequestStream> stream;
    double submitted = 0.0;
  };
  std::unordered_map<int64_t, Pending> pending_streams_;
  int64_t next_request_id_ = 1;
  int64_t next_seq_id_ = 1;
  int64_t queued_ = 0;  // submitted and not yet finished

  mutable std::mutex stats_mutex_;
  EngineStats stats_;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> dead_{false};
  std::string failure_;        // guarded by inbox_mutex_
  int64_t steps_started_ = 0;  // steps with work, for fail_at_step
  std::mt19937_64 unseeded_rng_;
  DecodeGraphSummary decode_graphs_;
};

}  // namespace ds
