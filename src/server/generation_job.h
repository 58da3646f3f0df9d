// One HTTP request that generates: its prompts (a list of prompts in /v1/completions) each submitted to the
// engine as one request of n samples, answered as a single JSON body or as server-sent events.
//
// Flow: start() submits every prompt (all or nothing) -> the engine pushes deltas -> each stream's listener
// posts drain() onto the exchange's strand -> drain() folds the deltas into the choices and, when streaming,
// sends chunks -> when every sample has finished, the answer is completed (usage, [DONE]).
//
// Lifetime: the exchange's on_disconnect callback holds the job until the answer is complete; the engine's
// listeners hold it only weakly. A job destroyed before it completed (client gone, server stopping) aborts
// its engine requests, so their KV blocks are freed in the next engine step.
//
// Backpressure (streaming): while the exchange is backlogged (its client does not read what was sent),
// drain() stops taking deltas and pauses its engine requests; on_writable resumes them. What one streaming
// request holds is then bounded: the bytes queued for the client (--max-pending-bytes, plus the event that
// crossed it), the deltas of the engine step that was running when it paused (one per sample), and its
// choices' text and token ids (no logprobs: they went out with their chunks). A client that never reads again
// is cut off by the write timeout, which aborts the requests and frees their KV blocks.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "server/http_server.h"

namespace ds::server {

class GenerationJob;

// The jobs in flight, for shutdown: wait for them, or abort them.
class JobRegistry {
 public:
  void add(const std::shared_ptr<GenerationJob>& job);
  void remove(const GenerationJob* job);
  [[nodiscard]] size_t size() const;
  // Waits until no job is left or the deadline passes; true when none is left.
  bool wait_empty(std::chrono::steady_clock::time_point deadline) const;
  void abort_all();

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::unordered_map<const GenerationJob*, std::weak_ptr<GenerationJob>> jobs_;
};

struct PromptInput {
  std::vector<int32_t> ids;
  std::optional<std::string> text;  // as the client sent it (echo)
};

struct JobOptions {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  std::string model;
  int64_t created = 0;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  bool echo_only = false;         // echo with max_tokens 0: the prompt (and its logprobs) is the answer
  bool return_token_ids = false;  // vLLM's return_token_ids: prompt_token_ids and token_ids in the answer
  bool tokens_as_ids = false;     // vLLM's return_tokens_as_token_ids: logprob tokens as "token_id:N"
  bool log_requests = false;      // --log-requests: the prompts and params go to the access log
};

class GenerationJob : public std::enable_shared_from_this<GenerationJob> {
 public:
  GenerationJob(Engine& engine, const tokenizer::Tokenizer* tokenizer, std::shared_ptr<Exchange> exchange,
                JobOptions options, JobRegistry& registry);
  virtual ~GenerationJob();
  GenerationJob(const GenerationJob&) = delete;
  GenerationJob& operator=(const GenerationJob&) = delete;

  // Submits every prompt; if one is refused, those already submitted are aborted and the error is rethrown.
  // More samples (prompts x n) than the engine ever queues (--max-queue-len) is a 400 before any is
  // submitted: such a request could never be admitted, so a 503 would only make the client retry forever.
  void start(std::vector<PromptInput> prompts, const SamplingParams& params);
  // Any thread: ends every sample with finish_reason "abort".
  void abort();

 protected:
  struct Choice {
    size_t prompt = 0;
    int32_t index = 0;  // in the answer: prompt * n + sample
    std::string text;
    std::vector<int32_t> token_ids;
    std::vector<SampledToken> logprobs;
    std::string finish_reason;  // empty while generating
    bool first_sent = false;    // streaming: the first chunk of this choice went out
    int64_t text_offset = 0;    // completions logprobs: characters of the tokens so far
  };
  struct Prompt {
    PromptInput input;
    int64_t engine_id = 0;
    std::shared_ptr<RequestStream> stream;
    std::vector<std::optional<SampledToken>> prompt_logprobs;  // entry 0 is empty
  };

  // Streaming: the chunk(s) for a delta of `choice` (its state already includes the delta). `finish` is
  // the finish reason when this delta ends the choice.
  virtual void stream_delta(Choice& choice, std::string_view text, std::span<const int32_t> token_ids,
                            std::span<const SampledToken> logprobs, const std::string& finish) = 0;
  // Streaming: anything sent right after the headers (chat: the role).
  virtual void stream_begin() {}
  // The whole answer of a non-streamed request.
  [[nodiscard]] virtual nlohmann::json response_body() = 0;
  [[nodiscard]] virtual const char* chunk_object() const = 0;

  // {"id", "object", "created", "model"} of a chunk.
  [[nodiscard]] nlohmann::json chunk_head() const;
  [[nodiscard]] nlohmann::json usage() const;
  void send_chunk(const nlohmann::json& chunk);
  // The text of one token for logprobs: its decoded text, or "token_id:N".
  [[nodiscard]] std::string token_string(int32_t id) const;
  // The UTF-8 bytes of one token (chat logprobs' "bytes").
  [[nodiscard]] std::vector<int> token_bytes(int32_t id) const;
  // -inf (a token the sampler ruled out) is not JSON: clamp as vLLM does.
  [[nodiscard]] static double json_logprob(double logprob);

  Engine& engine_;
  const tokenizer::Tokenizer* tokenizer_;
  std::shared_ptr<Exchange> exchange_;
  JobOptions options_;
  SamplingParams params_;
  std::vector<Prompt> prompts_;
  std::vector<Choice> choices_;

 private:
  void notify();  // engine thread
  void drain();   // strand
  void complete();
  // Streaming, the client not reading: pause the engine requests and wait for the exchange to drain.
  void wait_for_client();
  void client_ready();

  JobRegistry& registry_;
  std::atomic<bool> drain_scheduled_{false};
  bool completed_ = false;
  bool waiting_for_client_ = false;  // drain() stopped for backpressure; on_writable will call client_ready
  bool engine_paused_ = false;       // Engine::pause was called for every prompt
  std::string error_;
};

}  // namespace ds::server
