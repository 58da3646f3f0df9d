#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <unordered_set>

namespace ds {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Distinct, reproducible streams for the samples of one seeded request; sample 0 uses the seed itself.
uint64_t sample_seed(uint64_t seed, int32_t index) {
  return seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(index);
}

// Whether the step computing seq's tokens from `begin` on also scores its prompt tokens: sample 0 of a
// request with prompt_logprobs, before its first output (a recompute after preemption has delivered them
// already).
bool scores_prompt(const Sequence& seq, int64_t begin) {
  return seq.params.prompt_logprobs.has_value() && seq.index == 0 && seq.num_output_tokens() == 0 &&
         begin < seq.num_prompt_tokens;
}

}  // namespace

Engine::Engine(ModelRunner& model, EngineConfig config, const tokenizer::Tokenizer* tokenizer)
    : model_(model),
      config_(config),
      tokenizer_(tokenizer),
      blocks_(static_cast<int32_t>(config.num_gpu_blocks), config.block_size,
              static_cast<int32_t>(config.num_cpu_blocks), config.enable_prefix_caching),
      scheduler_(config.scheduler, blocks_),
      unseeded_rng_(std::random_device{}()) {
  if (config_.max_model_len == 0) config_.max_model_len = model_.config().max_position_embeddings;
  DS_REQUIRE(config_.max_model_len <= model_.config().max_position_embeddings, InvalidArgument,
             "--max-model-len {} exceeds the model's max_position_embeddings {}", config_.max_model_len,
             model_.config().max_position_embeddings);
  model_.allocate_kv_cache(config_.num_gpu_blocks, config_.block_size);
  model_.allocate_swap_space(config_.num_cpu_blocks);
  if (config_.cuda_graphs && model_.backend().supports_graphs()) {
    const auto max_blocks =
        static_cast<int32_t>((config_.max_model_len + config_.block_size - 1) / config_.block_size);
    decode_graphs_ =
        model_.capture_decode_graphs(decode_graph_sizes(config_.scheduler.max_num_seqs), max_blocks);
  }
  publish_gauges();
}

Engine::~Engine() {
  stop();
}

std::shared_ptr<RequestStream> Engine::submit(EngineRequest request, int64_t* request_id) {
  SamplingParams& p = request.params;
  const ModelConfig& c = model_.config();
  p.validate({c.vocab_size, c.eos_token_ids});
  DS_REQUIRE(!request.prompt_ids.empty(), InvalidArgument, "the prompt is empty");
  for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
    DS_REQUIRE(request.prompt_ids[i] >= 0 && request.prompt_ids[i] < c.vocab_size, InvalidArgument,
               "prompt token {} (at index {}) is outside the vocabulary [0, {})", request.prompt_ids[i], i,
               c.vocab_size);
  }
  // max_tokens is at most int64's maximum: compared by subtraction, so that the sum cannot overflow.
  DS_REQUIRE(
      p.max_tokens <= config_.max_model_len - static_cast<int64_t>(request.prompt_ids.size()),
      InvalidArgument,
      "this model's maximum context length is {} tokens; the prompt has {} and max_tokens asks for {} more",
      config_.max_model_len, request.prompt_ids.size(), p.max_tokens);
  auto stream = std::make_shared<RequestStream>(static_cast<int32_t>(p.n));
  int64_t id = 0;
  {
    std::lock_guard lock(inbox_mutex_);
    if (dead_) throw EngineDeadError("the engine has failed and takes no more requests");
    // n > 1 is admitted all or nothing.
    if (p.n > config_.max_queue_len - queued_) {  // not queued_ + n: n may be near int64's maximum
      throw OverloadedError(fmt::format("the server is overloaded ({} requests queued, limit {}); retry later",
                                        queued_, config_.max_queue_len));
    }
    queued_ += p.n;
    id = next_request_id_++;
    inbox_.emplace_back(id, std::move(request));
    pending_streams_[id] = {stream, now_seconds()};
  }
  inbox_cv_.notify_all();
  if (request_id != nullptr) *request_id = id;
  return stream;
}

void Engine::abort(int64_t request_id) {
  {
    std::lock_guard lock(inbox_mutex_);
    aborts_.push_back(request_id);
  }
  inbox_cv_.notify_all();
}

void Engine::pause(int64_t request_id) {
  {
    std::lock_guard lock(inbox_mutex_);
    pauses_.emplace_back(request_id, true);
  }
  inbox_cv_.notify_all();
}

void Engine::resume(int64_t request_id) {
  {
    std::lock_guard lock(inbox_mutex_);
    pauses_.emplace_back(request_id, false);
  }
  inbox_cv_.notify_all();
}

void Engine::drain_inbox() {
  std::vector<std::pair<int64_t, EngineRequest>> inbox;
  std::vector<int64_t> aborts;
  std::vector<std::pair<int64_t, bool>> pauses;
  std::unordered_map<int64_t, Pending> streams;
  {
    std::lock_guard lock(inbox_mutex_);
    inbox.swap(inbox_);
    aborts.swap(aborts_);
    pauses.swap(pauses_);
    streams.swap(pending_streams_);
  }
  for (auto& [id, req] : inbox) {
    RequestState& state = requests_[id];
    state.id = id;
    state.stream = streams.at(id).stream;
    state.arrival_time = streams.at(id).submitted;
    for (int32_t i = 0; i < req.params.n; ++i) {
      auto seq = std::make_unique<Sequence>();
      seq->seq_id = next_seq_id_++;
      seq->request_id = id;
      seq->index = i;
      seq->priority = req.priority;
      seq->arrival = seq->seq_id;
      seq->token_ids = req.prompt_ids;
      seq->num_prompt_tokens = static_cast<int64_t>(req.prompt_ids.size());
      seq->params = req.params;
      seq->rng.seed(req.params.seed ? sample_seed(*req.params.seed, i) : unseeded_rng_());
      if (tokenizer_ != nullptr) {
        seq->detokenizer = std::make_unique<tokenizer::IncrementalDetokenizer>(
            *tokenizer_, req.params.skip_special_tokens, req.params.keep_special_token_ids);
        seq->stop_matcher =
            std::make_unique<StopStringMatcher>(req.params.stop, req.params.include_stop_str_in_output);
      }
      blocks_.update_hashes(*seq);
      owner_[seq.get()] = &state;
      state.seqs.push_back(std::move(seq));
    }
    state.seqs[0]->is_fork_parent = req.params.n > 1;
    scheduler_.add(state.seqs[0].get());
    waiting_since_[state.seqs[0].get()] = state.arrival_time;
    std::lock_guard lock(stats_mutex_);
    stats_.prompt_tokens += static_cast<int64_t>(req.prompt_ids.size()) * req.params.n;
  }
  for (const auto& [id, paused] : pauses) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    for (auto& seq : it->second.seqs)
      seq->paused = paused;  // the scheduler moves them at its next schedule()
  }
  for (int64_t id : aborts) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) continue;  // already finished
    for (auto& seq : it->second.seqs)
      if (!seq->is_finished()) finish(it->second, *seq, FinishReason::kAbort);
  }
  // Drop requests whose every sample has finished.
  for (auto it = requests_.begin(); it != requests_.end();) {
    const bool done = std::all_of(it->second.seqs.begin(), it->second.seqs.end(),
                                  [](const auto& s) { return s->is_finished(); });
    if (done) {
      for (auto& s : it->second.seqs) owner_.erase(s.get());
      request_prompt_logprobs_.erase(it->first);  // aborted while its prompt was being scored
      it = requests_.erase(it);
    } else {
      ++it;
    }
  }
}

void Engine::finish(RequestState& request, Sequence& seq, FinishReason reason, const std::string& error,
                    RequestDelta* last) {
  seq.status = SequenceStatus::kFinished;
  seq.finish_reason = reason;
  scheduler_.remove(&seq);
  last_token_time_.erase(&seq);
  waiting_since_.erase(&seq);
  RequestDelta own;
  RequestDelta& delta = last != nullptr ? *last : own;
  delta.index = seq.index;
  delta.finish_reason = reason;
  delta.error = error;
  // A stream that did not end on a stop string releases what it held back, and any unfinished character.
  if (seq.detokenizer && !seq.stop_matcher_stopped) {
    delta.text += seq.stop_matcher->feed(seq.detokenizer->finish(), false).emit;
    delta.text += seq.stop_matcher->flush();
  }
  request.stream->push(std::move(delta));
  std::lock_guard lock(stats_mutex_);
  ++stats_.finished[to_string(reason)];
  const bool all_done =
      std::all_of(request.seqs.begin(), request.seqs.end(), [](const auto& s) { return s->is_finished(); });
  if (all_done) stats_.e2e_request_latency.observe(now_seconds() - request.arrival_time);
  std::lock_guard inbox_lock(inbox_mutex_);
  --queued_;
}

bool Engine::has_work() const {
  std::lock_guard lock(inbox_mutex_);
  return !inbox_.empty() || !aborts_.empty() || !pauses_.empty() ||
         scheduler_.num_waiting() + scheduler_.num_running() + scheduler_.num_swapped() > 0;
}

void Engine::apply_block_moves(const SchedulerOutput& out) {
  model_.swap_out(out.swap_out);
  model_.swap_in(out.swap_in);
}

bool Engine::step() {
  if (config_.fail_at_step > 0 && has_work() && ++steps_started_ == config_.fail_at_step) {
    throw InternalError(
        fmt::format("injected engine fault at step {} (EngineConfig::fail_at_step)", steps_started_));
  }
  drain_inbox();
  const SchedulerOutput out = scheduler_.schedule();
  publish_gauges();
  if (out.empty()) return false;
  apply_block_moves(out);
  {
    const double now = now_seconds();
    // A preempted sequence waits to rejoin the batch (it is never scheduled again in the same step).
    for (const Sequence* p : out.preempted) waiting_since_[p] = now;
    std::lock_guard lock(stats_mutex_);
    for (const auto& s : out.scheduled) {
      if (const auto it = waiting_since_.find(s.seq); it != waiting_since_.end()) {
        stats_.batch_wait_time.observe(now - it->second);
        waiting_since_.erase(it);
      }
      RequestState& request = *owner_.at(s.seq);
      if (request.scheduled) continue;
      request.scheduled = true;
      stats_.request_queue_time.observe(now - request.arrival_time);
    }
  }

  // The batch: each scheduled sequence's next tokens; logits for its last token when that completes it, and
  // for every prompt token when prompt log-probs were asked for.
  ForwardBatch batch;
  const int32_t bs = config_.block_size;
  size_t max_blocks = 0;
  for (const auto& s : out.scheduled) max_blocks = std::max(max_blocks, s.seq->block_table.size());
  batch.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  batch.query_start_loc.push_back(0);
  std::vector<int32_t> first_logit_row;  // per scheduled sequence; -1 when it has none
  bool scores_prompts = false;
  for (const auto& s : out.scheduled) {
    const Sequence& seq = *s.seq;
    const int64_t begin = seq.num_computed_tokens, end = begin + s.num_new_tokens;
    const bool wants_prompt_logprobs = scores_prompt(seq, begin);
    scores_prompts = scores_prompts || wants_prompt_logprobs;
    first_logit_row.push_back(-1);
    for (int64_t pos = begin; pos < end; ++pos) {
      batch.token_ids.push_back(seq.token_ids[static_cast<size_t>(pos)]);
      batch.positions.push_back(static_cast<int32_t>(pos));
      batch.slot_mapping.push_back(int64_t{seq.block_table[static_cast<size_t>(pos / bs)]} * bs + pos % bs);
      if (wants_prompt_logprobs || (pos + 1 == end && end == seq.num_tokens())) {
        if (first_logit_row.back() < 0)
          first_logit_row.back() = static_cast<int32_t>(batch.logits_indices.size());
        batch.logits_indices.push_back(static_cast<int32_t>(batch.token_ids.size() - 1));
      }
    }
    batch.query_start_loc.push_back(static_cast<int32_t>(batch.token_ids.size()));
    batch.seq_lens.push_back(static_cast<int32_t>(end));
    for (size_t b = 0; b < max_blocks; ++b)
      batch.block_table.push_back(b < seq.block_table.size() ? seq.block_table[b] : 0);
  }
  const Tensor logits = model_.forward(batch);  // [logits_indices, vocab] on the model's backend
  host_logits_valid_ = false;
  if (scores_prompts) {
    host_logits_.resize(static_cast<size_t>(logits.numel()));
    model_.backend().copy_to_host(logits, host_logits_);
    host_logits_valid_ = true;
  }
  process_outputs(out, first_logit_row, logits, scores_prompts);
  {
    std::lock_guard lock(stats_mutex_);
    ++stats_.steps;
    for (const auto& s : out.scheduled)
      if (s.seq->num_computed_tokens <= s.seq->num_prompt_tokens)
        stats_.computed_prompt_tokens += s.num_new_tokens;
  }
  publish_gauges();
  return true;
}

void Engine::process_outputs(const SchedulerOutput& out, const std::vector<int32_t>& first_logit_row,
                             const Tensor& logits, bool scores_prompts) {
  const int64_t vocab = model_.config().vocab_size;
  const double now = now_seconds();
  // First every sequence's bookkeeping and who samples from which row, then every token at once (one call on
  // the device), then each token's stops and deltas, in the same order as one at a time.
  std::vector<PendingSample> pending;
  std::unordered_set<const Sequence*> sampling;  // a sequence draws at most one token a step
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    Sequence& seq = *out.scheduled[i].seq;
    RequestState& request = *owner_.at(&seq);
    const int64_t begin = seq.num_computed_tokens;
    seq.num_computed_tokens += out.scheduled[i].num_new_tokens;
    blocks_.cache_full_blocks(seq);
    if (first_logit_row[i] < 0) continue;
    int32_t row = first_logit_row[i];

    if (scores_prompt(seq, begin)) {
      // Row k holds the distribution of the token at begin + k + 1.
      const float* rows = host_logits_.data() + int64_t{row} * vocab;
      auto& prompt_logprobs = request_prompt_logprobs_[request.id];
      if (prompt_logprobs.empty()) prompt_logprobs.resize(static_cast<size_t>(seq.num_prompt_tokens));
      try {
        for (int64_t pos = begin; pos < seq.num_computed_tokens && pos + 1 < seq.num_prompt_tokens; ++pos) {
          prompt_logprobs[static_cast<size_t>(pos + 1)] =
              Sampler::score({rows + (pos - begin) * vocab, static_cast<size_t>(vocab)},
                             seq.token_ids[static_cast<size_t>(pos + 1)], *seq.params.prompt_logprobs);
        }
      } catch (const SamplingError& e) {
        fail_request(request, e.what());
        continue;
      }
      row +=
          static_cast<int32_t>(seq.num_computed_tokens - 1 - begin);  // the last row samples the next token
    }
    if (seq.num_computed_tokens != seq.num_tokens()) continue;  // a prefill chunk: nothing to sample yet
    if (sampling.contains(&seq)) continue;

    if (seq.is_fork_parent && !request.forked) fork_samples(request);
    pending.push_back({&seq, &request, row});
    sampling.insert(&seq);
    if (seq.is_fork_parent && request.forked && seq.num_output_tokens() == 0) {
      for (auto& child : request.seqs)
        if (child.get() != &seq && child->status == SequenceStatus::kRunning &&
            child->num_output_tokens() == 0 && child->num_computed_tokens == seq.num_computed_tokens &&
            !sampling.contains(child.get())) {
          pending.push_back({child.get(), &request, row});
          sampling.insert(child.get());
        }
    }
  }
  std::vector<std::string> errors;
  const std::vector<SampledToken> tokens =
      sample_tokens(pending, logits, config_.sample_on_device && !scores_prompts, errors);
  for (size_t k = 0; k < pending.size(); ++k) {
    if (!errors[k].empty()) fail_request(*pending[k].request, errors[k]);
    if (pending[k].seq->is_finished()) continue;  // its request failed on another sample's row
    emit_token(*pending[k].request, *pending[k].seq, tokens[k], now);
  }
}

void Engine::fail_request(RequestState& request, const std::string& error) {
  spdlog::error("request {}: {}; ending this request only", request.id, error);
  for (auto& seq : request.seqs)
    if (!seq->is_finished()) finish(request, *seq, FinishReason::kError, error);
}

std::vector<SampledToken> Engine::sample_tokens(const std::vector<PendingSample>& pending,
                                                const Tensor& logits, bool on_device,
                                                std::vector<std::string>& errors) {
  const int64_t vocab = model_.config().vocab_size;
  auto context_of = [&](const Sequence& s) {
    return SamplingContext{
        std::span<const int32_t>(s.token_ids.data(), static_cast<size_t>(s.num_prompt_tokens)),
        std::span<const int32_t>(s.token_ids.data() + s.num_prompt_tokens,
                                 static_cast<size_t>(s.num_output_tokens())),
        model_.config().eos_token_ids};
  };
  // One uniform per sampling sequence from its own generator, wherever the draw happens.
  std::vector<double> uniforms;
  uniforms.reserve(pending.size());
  for (const PendingSample& p : pending) uniforms.push_back(Sampler::draw_uniform(p.seq->params, p.seq->rng));

  std::vector<SampledToken> tokens(pending.size());
  errors.assign(pending.size(), {});
  if (pending.empty()) return tokens;
  if (on_device) {
    std::vector<SampleRequest> requests;
    requests.reserve(pending.size());
    for (size_t k = 0; k < pending.size(); ++k)
      requests.push_back(to_sample_request(pending[k].seq->params, context_of(*pending[k].seq),
                                           pending[k].row, uniforms[k], vocab));
    std::vector<SampleResult> results(pending.size());
    if (model_.backend().sample(logits, requests, results)) {
      for (size_t k = 0; k < pending.size(); ++k) {
        if (results[k].status == SampleStatus::kOk) {
          tokens[k] = to_sampled_token(results[k]);
        } else {
          errors[k] = results[k].status == SampleStatus::kAllMasked
                          ? "sampling failed: every token of the vocabulary is masked"
                          : "sampling failed: the model's logits have NaN or no finite maximum";
        }
      }
      return tokens;
    }
  }
  if (!host_logits_valid_) {
    host_logits_.resize(static_cast<size_t>(logits.numel()));
    model_.backend().copy_to_host(logits, host_logits_);
    host_logits_valid_ = true;
  }
  for (size_t k = 0; k < pending.size(); ++k) {
    const float* row = host_logits_.data() + int64_t{pending[k].row} * vocab;
    try {
      tokens[k] = sampler_.sample({row, static_cast<size_t>(vocab)}, pending[k].seq->params,
                                  context_of(*pending[k].seq), uniforms[k]);
    } catch (const SamplingError& e) {
      errors[k] = fmt::format("sampling failed: {}", e.what());
    }
  }
  return tokens;
}

void Engine::emit_token(RequestState& request, Sequence& seq, const SampledToken& token, double now) {
  Sequence* s = &seq;
  s->token_ids.push_back(token.token);
  blocks_.update_hashes(*s);
  RequestDelta d;
  d.index = s->index;
  d.token_ids.push_back(token.token);
  bool stopped_on_text = false;
  if (s->detokenizer) {
    const bool past_min = s->num_output_tokens() >= s->params.min_tokens;
    auto r = s->stop_matcher->feed(s->detokenizer->step(token.token), past_min);
    d.text = std::move(r.emit);
    stopped_on_text = s->stop_matcher_stopped = r.stopped;
  }
  if (s->params.logprobs) d.logprobs.push_back(token);
  if (s->index == 0 && s->num_output_tokens() == 1) {
    const auto it = request_prompt_logprobs_.find(request.id);
    if (it != request_prompt_logprobs_.end()) {
      d.prompt_logprobs = std::move(it->second);
      request_prompt_logprobs_.erase(it);
    }
  }
  {
    std::lock_guard lock(stats_mutex_);
    ++stats_.generation_tokens;
    if (!request.first_token_time) {
      request.first_token_time = now;
      stats_.time_to_first_token.observe(now - request.arrival_time);
    } else if (s->num_output_tokens() > 1) {
      stats_.inter_token_latency.observe(now - last_token_time_[s]);
    }
    last_token_time_[s] = now;
  }
  if (stopped_on_text) s->finish_reason = FinishReason::kStop;
  const bool done = stopped_on_text || check_stop(*s);
  if (done) {
    finish(request, *s, s->finish_reason, {}, &d);
  } else {
    request.stream->push(std::move(d));
  }
}

void Engine::fork_samples(RequestState& request) {
  Sequence& parent = *request.seqs[0];
  request.forked = true;
  std::vector<BlockMove> copies;
  for (size_t i = 1; i < request.seqs.size(); ++i) {
    Sequence& child = *request.seqs[i];
    if (child.is_finished()) continue;
    if (blocks_.can_fork(parent)) {
      const auto moves = blocks_.fork(parent, child);
      copies.insert(copies.end(), moves.begin(), moves.end());
      scheduler_.add_running(&child);
    } else {
      // No block to copy the partial prompt block into: this sample computes its prompt itself (its full
      // blocks still come from the prefix cache).
      scheduler_.add(&child);
      waiting_since_[&child] = now_seconds();
    }
  }
  model_.copy_blocks(copies);
}

bool Engine::check_stop(Sequence& seq) {
  const int32_t last = seq.token_ids.back();
  const bool min_reached = seq.num_output_tokens() >= seq.params.min_tokens;
  const auto& eos = model_.config().eos_token_ids;
  if (min_reached && !seq.params.ignore_eos && std::find(eos.begin(), eos.end(), last) != eos.end()) {
    seq.finish_reason = FinishReason::kStop;
    return true;
  }
  const auto& stop_ids = seq.params.stop_token_ids;
  if (min_reached && std::find(stop_ids.begin(), stop_ids.end(), last) != stop_ids.end()) {
    seq.finish_reason = FinishReason::kStop;
    return true;
  }
  if (seq.num_output_tokens() >= seq.params.max_tokens || seq.num_tokens() >= config_.max_model_len) {
    seq.finish_reason = FinishReason::kLength;
    return true;
  }
  return false;
}

void Engine::die(const std::string& error) {
  std::vector<std::pair<int64_t, EngineRequest>> inbox;
  std::unordered_map<int64_t, Pending> streams;
  {
    std::lock_guard lock(inbox_mutex_);
    dead_ = true;
    failure_ = error;
    inbox.swap(inbox_);
    streams.swap(pending_streams_);
    queued_ = 0;
  }
  // Every open sample, counted in the stats before its stream hears of it.
  std::vector<std::pair<RequestStream*, int32_t>> open;
  for (auto& [id, request] : requests_) {
    for (auto& seq : request.seqs) {
      if (seq->is_finished()) continue;
      seq->status = SequenceStatus::kFinished;
      seq->finish_reason = FinishReason::kError;
      open.emplace_back(request.stream.get(), seq->index);
    }
  }
  for (auto& [id, request] : inbox)
    for (int32_t i = 0; i < request.params.n; ++i) open.emplace_back(streams.at(id).stream.get(), i);
  {
    std::lock_guard lock(stats_mutex_);
    stats_.finished["error"] += static_cast<int64_t>(open.size());
    stats_.num_running = stats_.num_waiting = stats_.num_swapped = stats_.num_paused = 0;
  }
  for (auto& [stream, index] : open) {
    RequestDelta d;
    d.index = index;
    d.finish_reason = FinishReason::kError;
    d.error = error;
    stream->push(std::move(d));
  }
}

void Engine::start() {
  stop_ = false;
  thread_ = std::thread([this] {
    while (!stop_) {
      bool worked = false;
      try {
        worked = step();
      } catch (const std::exception& e) {
        spdlog::critical("engine step failed: {}; the engine is dead, ending every request", e.what());
        die(e.what());
        return;
      } catch (...) {
        spdlog::critical(
            "engine step failed with an unknown exception; the engine is dead, ending every request");
        die("unknown exception");
        return;
      }
      if (!worked) {
        std::unique_lock lock(inbox_mutex_);
        inbox_cv_.wait_for(lock, std::chrono::milliseconds(20),
                           [&] { return stop_ || !inbox_.empty() || !aborts_.empty() || !pauses_.empty(); });
      }
    }
  });
}

void Engine::stop() {
  stop_ = true;
  inbox_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Engine::failure() const {
  std::lock_guard lock(inbox_mutex_);
  return failure_;
}

EngineStats Engine::stats() const {
  std::lock_guard lock(stats_mutex_);
  return stats_;
}

void Engine::publish_gauges() {
  int64_t allocated = 0, used = 0;
  for (const Sequence* seq : scheduler_.live_sequences()) {
    allocated += static_cast<int64_t>(seq->block_table.size()) * config_.block_size;
    used += std::min<int64_t>(seq->num_computed_tokens,
                              static_cast<int64_t>(seq->block_table.size()) * config_.block_size);
  }
  std::lock_guard lock(stats_mutex_);
  stats_.num_running = static_cast<int64_t>(scheduler_.num_running());
  stats_.num_waiting = static_cast<int64_t>(scheduler_.num_waiting());
  stats_.num_swapped = static_cast<int64_t>(scheduler_.num_swapped());
  stats_.num_paused = static_cast<int64_t>(scheduler_.num_paused());
  stats_.kv_cache_usage = blocks_.usage();
  stats_.num_free_blocks = blocks_.num_free_blocks();
  stats_.prefix_cache_queries = blocks_.stats().prefix_queries;
  stats_.prefix_cache_hits = blocks_.stats().prefix_hits;
  stats_.preemptions_recompute = scheduler_.counters().preemptions_recompute;
  stats_.preemptions_swap = scheduler_.counters().preemptions_swap;
  stats_.kv_cache_fragmentation =
      allocated > 0 ? 1.0 - static_cast<double>(used) / static_cast<double>(allocated) : 0.0;
}

void Engine::check_invariants() const {
  blocks_.check_invariants(scheduler_.live_sequences());
  // Per-request bookkeeping leaves with its request (a long-running server must not grow with aborts).
  for (const auto& [seq, time] : last_token_time_) {
    DS_CHECK(owner_.contains(seq) && !seq->is_finished(), "token time kept for a finished sequence");
  }
  for (const auto& [seq, since] : waiting_since_) {
    DS_CHECK(owner_.contains(seq) && !seq->is_finished(), "wait time kept for a finished sequence");
  }
  for (const auto& [id, logprobs] : request_prompt_logprobs_) {
    DS_CHECK(requests_.contains(id), "prompt logprobs kept for finished request {}", id);
  }
}

}  // namespace ds
