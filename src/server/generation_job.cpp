#include "server/generation_job.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "server/errors.h"
#include "server/request_log.h"

namespace ds::server {

void JobRegistry::add(const std::shared_ptr<GenerationJob>& job) {
  std::lock_guard lock(mutex_);
  jobs_[job.get()] = job;
}

void JobRegistry::remove(const GenerationJob* job) {
  {
    std::lock_guard lock(mutex_);
    if (jobs_.erase(job) == 0) return;
  }
  cv_.notify_all();
}

size_t JobRegistry::size() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

bool JobRegistry::wait_empty(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_until(lock, deadline, [&] { return jobs_.empty(); });
}

void JobRegistry::abort_all() {
  std::vector<std::shared_ptr<GenerationJob>> jobs;
  {
    std::lock_guard lock(mutex_);
    for (auto& [ptr, weak] : jobs_)
      if (auto job = weak.lock()) jobs.push_back(std::move(job));
  }
  for (auto& job : jobs) job->abort();
}

GenerationJob::GenerationJob(Engine& engine, const tokenizer::Tokenizer* tokenizer,
                             std::shared_ptr<Exchange> exchange, JobOptions options, JobRegistry& registry)
    : engine_(engine),
      tokenizer_(tokenizer),
      exchange_(std::move(exchange)),
      options_(std::move(options)),
      registry_(registry) {}

GenerationJob::~GenerationJob() {
  if (!completed_) abort();
  registry_.remove(this);
}

void GenerationJob::start(std::vector<PromptInput> prompts, const SamplingParams& params) {
  params_ = params;
  const auto samples = static_cast<int64_t>(prompts.size()) * params.n;
  if (samples > engine_.config().max_queue_len) {
    completed_ = true;  // nothing submitted: the caller answers the error
    throw bad_request(
        fmt::format("this request asks for {} samples ({} prompt(s) x n={}), more than this server "
                    "ever queues (--max-queue-len {}); send fewer prompts or a smaller n",
                    samples, prompts.size(), params.n, engine_.config().max_queue_len),
        prompts.size() > 1 ? "prompt" : "n", "too_many_samples");
  }
  if (options_.log_requests) exchange_->set_request_details(request_log_details(prompts, params, tokenizer_));
  prompts_.reserve(prompts.size());
  try {
    for (auto& input : prompts) {
      Prompt p;
      p.input = std::move(input);
      EngineRequest request;
      request.prompt_ids = p.input.ids;
      request.params = params;
      p.stream = engine_.submit(std::move(request), &p.engine_id);
      prompts_.push_back(std::move(p));
    }
  } catch (...) {
    abort();
    completed_ = true;  // nothing to answer from here: the caller answers the error
    throw;
  }
  for (size_t p = 0; p < prompts_.size(); ++p) {
    for (int32_t s = 0; s < params.n; ++s) {
      Choice c;
      c.prompt = p;
      c.index = static_cast<int32_t>(p * static_cast<size_t>(params.n)) + s;
      choices_.push_back(std::move(c));
    }
  }
  registry_.add(shared_from_this());
  exchange_->on_disconnect([self = shared_from_this()] { self->abort(); });
  if (options_.stream) {
    exchange_->start_events();
    stream_begin();
  }
  for (auto& p : prompts_) {
    p.stream->set_listener([weak = weak_from_this()] {
      if (auto job = weak.lock()) job->notify();
    });
  }
}

void GenerationJob::abort() {
  for (const auto& p : prompts_) engine_.abort(p.engine_id);
}

void GenerationJob::notify() {
  if (drain_scheduled_.exchange(true)) return;
  exchange_->post([self = shared_from_this()] {
    self->drain_scheduled_ = false;
    self->drain();
  });
}

void GenerationJob::wait_for_client() {
  if (waiting_for_client_) return;
  waiting_for_client_ = true;
  if (!engine_paused_) {
    engine_paused_ = true;
    for (const auto& p : prompts_) engine_.pause(p.engine_id);
  }
  exchange_->on_writable([self = shared_from_this()] { self->client_ready(); });
}

void GenerationJob::client_ready() {
  waiting_for_client_ = false;
  drain();
  if (waiting_for_client_ || !engine_paused_ || completed_) return;
  engine_paused_ = false;
  for (const auto& p : prompts_) engine_.resume(p.engine_id);
}

void GenerationJob::drain() {
  if (completed_ || waiting_for_client_) return;
  RequestDelta d;
  const auto n = static_cast<size_t>(params_.n);
  for (size_t p = 0; p < prompts_.size(); ++p) {
    Prompt& prompt = prompts_[p];
    while (true) {
      if (options_.stream && exchange_->backlogged()) return wait_for_client();
      if (!prompt.stream->try_next(d)) break;
      Choice& c = choices_[p * n + static_cast<size_t>(d.index)];
      if (!d.prompt_logprobs.empty()) prompt.prompt_logprobs = std::move(d.prompt_logprobs);
      std::string finish;
      if (d.finish_reason == FinishReason::kError) {
        error_ = d.error.empty() ? "the engine failed while generating" : d.error;
        finish = "error";
      } else if (d.finish_reason != FinishReason::kNone) {
        // Scoring (echo, max_tokens 0) asked the engine for one token, which is not part of the answer.
        finish = options_.echo_only && d.finish_reason != FinishReason::kAbort ? "length"
                                                                               : to_string(d.finish_reason);
      }
      if (options_.echo_only) {
        d.text.clear();
        d.token_ids.clear();
        d.logprobs.clear();
      }
      c.text += d.text;
      c.token_ids.insert(c.token_ids.end(), d.token_ids.begin(), d.token_ids.end());
      // A stream sends the logprobs with their chunk; only a whole answer needs them kept.
      if (!options_.stream) c.logprobs.insert(c.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
      if (!finish.empty()) c.finish_reason = finish;
      if (options_.stream && error_.empty() && (!options_.echo_only || !finish.empty())) {
        stream_delta(c, d.text, d.token_ids, d.logprobs, finish);
      }
    }
  }
  const bool done =
      std::all_of(prompts_.begin(), prompts_.end(), [](const Prompt& p) { return p.stream->finished(); });
  if (done) complete();
}

void GenerationJob::complete() {
  completed_ = true;
  const nlohmann::json u = usage();
  exchange_->set_tokens(u["prompt_tokens"].get<int64_t>(), u["completion_tokens"].get<int64_t>());
  ErrorReply error;
  if (!error_.empty()) {
    // The engine's own words (file:line of a failed check, device errors) go to the log, not to the client.
    spdlog::error("request {}: the engine failed: {}", exchange_->request_id(), error_);
    error.status = 500;
    error.type = "server_error";
    error.message = fmt::format("internal error (request id {})", exchange_->request_id());
    error.code = "engine_error";
  }
  if (options_.stream) {
    if (!error_.empty()) {
      exchange_->send_event(error.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else if (options_.include_usage) {
      nlohmann::json chunk = chunk_head();
      chunk["choices"] = nlohmann::json::array();
      chunk["usage"] = u;
      send_chunk(chunk);
    }
    exchange_->end_events();
  } else if (!error_.empty()) {
    exchange_->reply_error(error);
  } else {
    exchange_->reply_json(200, response_body());
  }
  registry_.remove(this);
}

nlohmann::json GenerationJob::chunk_head() const {
  return {{"id", options_.id},
          {"object", chunk_object()},
          {"created", options_.created},
          {"model", options_.model}};
}

nlohmann::json GenerationJob::usage() const {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (const auto& p : prompts_) prompt_tokens += static_cast<int64_t>(p.input.ids.size());
  for (const auto& c : choices_) completion_tokens += static_cast<int64_t>(c.token_ids.size());
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

void GenerationJob::send_chunk(const nlohmann::json& chunk) {
  exchange_->send_event(chunk.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string GenerationJob::token_string(int32_t id) const {
  if (tokenizer_ == nullptr || options_.tokens_as_ids) return fmt::format("token_id:{}", id);
  const int32_t ids[] = {id};
  return tokenizer_->decode(ids, false);
}

std::vector<int> GenerationJob::token_bytes(int32_t id) const {
  std::string bytes;
  if (tokenizer_ != nullptr && tokenizer_->has_byte_level_decoder()) {
    tokenizer_->append_token_bytes(id, false, bytes);
  } else {
    bytes = token_string(id);
  }
  std::vector<int> out;
  for (unsigned char b : bytes) out.push_back(b);
  return out;
}

double GenerationJob::json_logprob(double logprob) {
  return std::isfinite(logprob) ? logprob : -9999.0;
}

}  // namespace ds::server
