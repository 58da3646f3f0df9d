// The official `openai` npm client (v6) against a real `deepserve serve` on the fixture model. Every answer is
// checked against the engine's own output for the same request, obtained with `deepserve generate --batch`
// (greedy, and seeded sampling, which the engine makes independent of batching).
//
//   node run.mjs [path/to/deepserve]      (after `npm ci` in this folder)
//
// Exit codes: 0 all passed, 1 a check failed, 77 skipped (the openai package is not installed).
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");

let OpenAI;
try {
  ({ default: OpenAI } = await import("openai"));
} catch {
  console.log("SKIP: the openai package is not installed (run `npm ci` in tests/e2e/openai_client)");
  process.exit(77);
}

const binary = process.argv[2] ?? process.env.DEEPSERVE_BIN ?? path.join(root, "build", "deepserve");
const fixtures = path.join(root, "tests", "fixtures");
const model =
  process.env.DEEPSERVE_E2E_MODEL ??
  ["deepseek_v3_tiny_chat", "deepseek_v2_tiny_bf16"].map((m) => path.join(fixtures, m)).find((d) => existsSync(d));
const hasTokenizer = existsSync(path.join(model, "tokenizer.json"));
const servedName = "tiny-e2e";
const apiKey = "e2e-secret-key";

// ---- The engine's own answers, through `deepserve generate --batch`. ----
function engineAnswers(requests) {
  const dir = mkdtempSync(path.join(tmpdir(), "deepserve-e2e-"));
  const file = path.join(dir, "batch.jsonl");
  writeFileSync(file, requests.map((r, i) => JSON.stringify({ id: i, ...r })).join("\n") + "\n");
  const out = execFileSync(binary, ["generate", "--model", model, "--batch", file], { encoding: "utf8" });
  rmSync(dir, { recursive: true, force: true });
  const lines = out.trim().split("\n").map((l) => JSON.parse(l));
  for (const l of lines) assert.equal(l.error, undefined, `generate --batch: ${l.error}`);
  // One list of token-id lists (one per sample) for each request; the text and prompt ids ride along.
  return lines.map((l) => {
    const samples = l.outputs ? l.outputs.map((o) => o.token_ids) : [l.token_ids];
    samples.texts = l.outputs ? l.outputs.map((o) => o.text) : [l.text];
    samples.promptIds = l.prompt_ids;
    return samples;
  });
}

// ---- The server. ----
function startServer() {
  const args = ["serve", "--model", model, "--served-model-name", servedName, "--port", "0", "--api-key", apiKey,
                "--access-log", "", "--shutdown-timeout", "2"];
  const proc = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), 60000);
    proc.stderr.on("data", (d) => {
      stderr += d;
      const m = stderr.match(/listening on (http:\/\/[\d.]+:\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, base: m[1] });
      }
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}:\n${stderr}`)));
  });
}

// ---- A tiny runner. ----
const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}\n     ${(e.stack ?? String(e)).split("\n").slice(0, 6).join("\n     ")}`);
  }
}

const greedy = { temperature: 0, ignore_eos: true };
const promptA = [1, 2, 3, 4, 5];
const promptB = [7, 8, 9];
const reference = engineAnswers([
  { prompt: promptA, max_tokens: 12, ...greedy },                                    // 0
  { prompt: promptB, max_tokens: 6, ...greedy },                                     // 1
  { prompt: promptA, max_tokens: 10, temperature: 0.9, seed: 4242, ignore_eos: true }, // 2
  { prompt: promptB, max_tokens: 8, temperature: 1.0, seed: 77, n: 2, ignore_eos: true }, // 3
]);

const { proc, base } = await startServer();
const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 60000 });

await check("models.list names the served model", async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.deepEqual(models.map((m) => m.id), [servedName]);
  assert.equal(models[0].object, "model");
});

await check("completion: greedy tokens and usage equal the engine's", async () => {
  const r = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 12, ...greedy,
                                              return_token_ids: true });
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.deepEqual(r.choices[0].token_ids, reference[0][0]);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.deepEqual(r.usage, { prompt_tokens: 5, completion_tokens: 12, total_tokens: 17 });
});

await check("completion streamed: chunks add up to the engine's tokens, usage chunk, one id", async () => {
  const stream = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 12, ...greedy,
                                                   return_token_ids: true, stream: true,
                                                   stream_options: { include_usage: true } });
  const tokens = [];
  const ids = new Set();
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      tokens.push(...c.token_ids);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.deepEqual(tokens, reference[0][0]);
  assert.equal(finish, "length");
  assert.deepEqual(usage, { prompt_tokens: 5, completion_tokens: 12, total_tokens: 17 });
  assert.equal(ids.size, 1);
});

await check("completion with a list of prompts and n: every choice equals the engine's", async () => {
  const r = await client.completions.create({ model: servedName, prompt: [promptA, promptB], max_tokens: 6, n: 2,
                                              ...greedy, return_token_ids: true });
  assert.equal(r.choices.length, 4);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
  assert.deepEqual(r.choices[0].token_ids, reference[0][0].slice(0, 6));
  assert.deepEqual(r.choices[1].token_ids, reference[0][0].slice(0, 6));
  assert.deepEqual(r.choices[2].token_ids, reference[1][0]);
  assert.deepEqual(r.choices[3].token_ids, reference[1][0]);
  assert.equal(r.usage.prompt_tokens, promptA.length + promptB.length);
  assert.equal(r.usage.completion_tokens, 24);
});

await check("seed: sampled tokens equal the engine's for the same seed (n = 1 and n = 2)", async () => {
  const one = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 10,
                                                temperature: 0.9, seed: 4242, ignore_eos: true,
                                                return_token_ids: true });
  assert.deepEqual(one.choices[0].token_ids, reference[2][0]);
  const two = await client.completions.create({ model: servedName, prompt: promptB, max_tokens: 8, temperature: 1.0,
                                                seed: 77, n: 2, ignore_eos: true, return_token_ids: true });
  assert.deepEqual(two.choices.map((c) => c.token_ids), [...reference[3]]);
});

await check("stop: a stop token id ends the answer with finish_reason stop", async () => {
  const ref = reference[0][0];
  const stopAt = ref[3];
  const cut = ref.indexOf(stopAt) + 1;
  const r = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 12, ...greedy,
                                              stop: ["never-in-the-output"], stop_token_ids: [stopAt],
                                              return_token_ids: true });
  assert.deepEqual(r.choices[0].token_ids, ref.slice(0, cut));
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.usage.completion_tokens, cut);
});

await check("logprobs: the greedy token is the top-1 of its logprobs", async () => {
  const r = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 5, ...greedy,
                                              logprobs: 3, return_tokens_as_token_ids: true });
  const lp = r.choices[0].logprobs;
  assert.deepEqual(lp.tokens, reference[0][0].slice(0, 5).map((t) => `token_id:${t}`));
  lp.token_logprobs.forEach((value, i) => {
    assert.ok(value <= 0);
    assert.equal(Math.max(...Object.values(lp.top_logprobs[i])), value);
  });
});

await check("echo with max_tokens 0 scores the prompt like generation reported it", async () => {
  const gen = await client.completions.create({ model: servedName, prompt: promptA, max_tokens: 3, ...greedy,
                                                logprobs: 0 });
  const prompt = [...promptA, ...reference[0][0].slice(0, 3)];
  const r = await client.completions.create({ model: servedName, prompt, max_tokens: 0, echo: true, logprobs: 0 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, prompt.length);
  assert.equal(lp.token_logprobs[0], null);
  for (let i = 0; i < 3; i++) {
    assert.ok(Math.abs(lp.token_logprobs[promptA.length + i] - gen.choices[0].logprobs.token_logprobs[i]) < 1e-3);
  }
  assert.equal(r.usage.completion_tokens, 0);
});

await check("errors come back as the client's typed errors with param and code", async () => {
  await assert.rejects(client.completions.create({ model: servedName, prompt: promptA, max_tokens: -1 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, "max_tokens");
    assert.equal(e.type, "invalid_request_error");
    return e instanceof OpenAI.BadRequestError;
  });
  const [{ max_model_len: maxModelLen }] = (await client.models.list()).data;
  await assert.rejects(client.completions.create({ model: servedName, prompt: Array(maxModelLen - 2).fill(3),
                                                   max_tokens: 8 }),
                       (e) => e.status === 400 && e.code === "context_length_exceeded" &&
                              e.message.includes(String(maxModelLen)));
  await assert.rejects(client.completions.create({ model: "no-such-model", prompt: promptA }),
                       (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
  const stranger = new OpenAI({ baseURL: `${base}/v1`, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(stranger.completions.create({ model: servedName, prompt: promptA }),
                       (e) => e instanceof OpenAI.AuthenticationError);
});

await check("a stream the client aborts is aborted in the engine", async () => {
  const controller = new AbortController();
  const stream = await client.completions.create(
      { model: servedName, prompt: promptA, max_tokens: 200, ...greedy, stream: true },
      { signal: controller.signal });
  let seen = 0;
  try {
    for await (const chunk of stream) {
      if (++seen === 3) controller.abort();
    }
  } catch (e) {
    assert.ok(e.name === "AbortError" || e instanceof OpenAI.APIUserAbortError, String(e));
  }
  const metric = async (name) => {
    const text = await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } })).text();
    const m = text.match(new RegExp(`^deepserve:${name}\\{[^}]*\\} (\\S+)$`, "m"));
    return Number(m[1]);
  };
  for (let i = 0; i < 500 && ((await metric("num_requests_running")) > 0 || (await metric("kv_cache_usage_perc")) > 0); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(await metric("num_requests_running"), 0);
  assert.equal(await metric("kv_cache_usage_perc"), 0);
  const aborted = (await (await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } })).text())
      .match(/request_success_total\{[^}]*finished_reason="abort"\} (\S+)/);
  assert.ok(Number(aborted[1]) >= 1);
});

if (hasTokenizer) {
  await check("text prompt: tokens and text equal the engine's (generate --batch with the same text)", async () => {
    const [ref] = engineAnswers([{ prompt: "Hello", max_tokens: 8, ...greedy }]);
    const r = await client.completions.create({ model: servedName, prompt: "Hello", max_tokens: 8, ...greedy,
                                                return_token_ids: true });
    assert.deepEqual(r.choices[0].prompt_token_ids, ref.promptIds);
    assert.deepEqual(r.choices[0].token_ids, ref[0]);
    assert.equal(r.choices[0].text, ref.texts[0]);
    assert.equal(r.usage.prompt_tokens, ref.promptIds.length);
    const stream = await client.completions.create({ model: servedName, prompt: "Hello", max_tokens: 8, ...greedy,
                                                     stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices.map((c) => c.text).join("");
    assert.equal(text, ref.texts[0]);
  });
  const messages = [{ role: "user", content: "Hello" }];
  const tokenizedReply = await fetch(`${base}/tokenize`, {
    method: "POST", headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ messages }) });
  const tokenized = await tokenizedReply.json();
  if (tokenizedReply.status !== 200) {
    console.log(`skip chat: ${tokenized.error?.message}`);
    await check("chat without a chat template is a clear 400", async () => {
      await assert.rejects(client.chat.completions.create({ model: servedName, messages }),
                           (e) => e instanceof OpenAI.BadRequestError && /chat template/.test(e.message));
    });
  } else await check("chat, streamed and not: the same answer as the engine for the templated prompt", async () => {
    // generate --batch renders the conversation with the model's template itself.
    const [ref] = engineAnswers([{ messages, max_tokens: 8, ...greedy }]);
    assert.deepEqual(tokenized.tokens, ref.promptIds);
    const r = await client.chat.completions.create({ model: servedName, messages, max_tokens: 8, ...greedy,
                                                     return_token_ids: true });
    assert.deepEqual(r.prompt_token_ids, ref.promptIds);
    assert.deepEqual(r.choices[0].token_ids, ref[0]);
    assert.equal(r.choices[0].message.content, ref.texts[0]);
    assert.equal(r.choices[0].message.role, "assistant");
    assert.equal(r.usage.prompt_tokens, tokenized.count);
    const stream = await client.chat.completions.create({ model: servedName, messages, max_tokens: 8, ...greedy,
                                                          stream: true, stream_options: { include_usage: true } });
    let content = "";
    let role = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        content += c.delta.content ?? "";
      }
    }
    assert.equal(role, "assistant");
    assert.equal(content, r.choices[0].message.content);
    assert.deepEqual(usage, r.usage);
  });
} else {
  await check("chat without a tokenizer is a clear 400", async () => {
    await assert.rejects(client.chat.completions.create({ model: servedName, messages: [{ role: "user", content: "hi" }] }),
                         (e) => e instanceof OpenAI.BadRequestError);
  });
}

proc.kill("SIGTERM");
const { code } = await exited;
await check("SIGTERM: the server exits 0", async () => assert.equal(code, 0));

const failed = results.filter(([, e]) => e);
console.log(`\n${results.length - failed.length} passed, ${failed.length} failed (model ${path.basename(model)})`);
process.exit(failed.length ? 1 : 0);
