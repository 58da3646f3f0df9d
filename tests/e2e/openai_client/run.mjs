// The official `openai` npm client (v6) against a real `deepserve serve` on the fixture model. Every answer is
// checked against the engine's own output for the same request, obtained with `deepserve generate --batch`
// (greedy, and seeded sampling, which the engine makes independent of batching).
//
//   node run.mjs [path/to/deepserve]      (after `npm ci` in this folder)
//   DEEPSERVE_E2E_DEVICE=cuda node run.mjs build-gpu/deepserve   (the same checks with --device cuda: servers and
//                                          the engine's reference answers on the GPU; scripts/gpu-check.sh)
//
// Exit codes: 0 all passed, 1 a check failed, 77 skipped (the openai package is not installed).
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
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
// On a GPU every process gets a quarter of its memory: two servers and a `generate` run side by side here.
const deviceArgs = (process.env.DEEPSERVE_E2E_DEVICE ?? "cpu") === "cpu"
  ? [] : ["--device", process.env.DEEPSERVE_E2E_DEVICE, "--gpu-memory-utilization", "0.25"];
const apiKey = "e2e-secret-key";

// ---- The engine's own answers, through `deepserve generate --batch`. ----
function engineAnswers(requests) {
  const dir = mkdtempSync(path.join(tmpdir(), "deepserve-e2e-"));
  const file = path.join(dir, "batch.jsonl");
  writeFileSync(file, requests.map((r, i) => JSON.stringify({ id: i, ...r })).join("\n") + "\n");
  const out = execFileSync(binary, ["generate", "--model", model, "--batch", file, ...deviceArgs],
                           { encoding: "utf8" });
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
function startServer(modelDir = model, extraArgs = []) {
  const args = ["serve", "--model", modelDir, "--served-model-name", servedName, "--port", "0", "--api-key", apiKey,
                "--access-log", "", "--shutdown-timeout", "2", ...deviceArgs, ...extraArgs];
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
  // As many tokens as the context holds: on a GPU the tiny model makes 200 before the abort arrives.
  const [{ max_model_len: contextLen }] = (await client.models.list()).data;
  const stream = await client.completions.create(
      { model: servedName, prompt: promptA, max_tokens: contextLen - promptA.length, ...greedy, stream: true },
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

// ---- Reasoning and tool calls, on the scripted fixture: greedy decoding emits <think>, a reasoning, </think>,
// a content, a get_weather call and EOS; after the tool's result, a short answer (expected.json: HF's tokens
// and texts). Two servers: one with the R1 reasoning parser (and vLLM's tool flags), one without. ----
const scriptedDir = path.join(fixtures, "deepseek_v3_tiny_scripted");
if (existsSync(path.join(scriptedDir, "expected.json")) && !process.env.DEEPSERVE_E2E_MODEL) {
  const expected = JSON.parse(readFileSync(path.join(scriptedDir, "expected.json"), "utf8"));
  const { script } = expected;
  const [turn1, turn2] = ["tool_call_turn", "after_tool_result"].map((n) => expected.cases.find((c) => c.name === n));
  const r1 = await startServer(scriptedDir, ["--reasoning-parser", "deepseek_r1", "--enable-auto-tool-choice",
                                             "--tool-call-parser", "deepseek_v3"]);
  const plain = await startServer(scriptedDir);
  const r1Client = new OpenAI({ baseURL: `${r1.base}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
  const plainClient = new OpenAI({ baseURL: `${plain.base}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
  const ask = { model: servedName, messages: turn1.messages, tools: turn1.tools, temperature: 0 };
  const markers = /<think>|<\/think>|<｜|｜>/;
  const expectedCall = { name: script.tool_name, arguments: script.tool_arguments };

  // Folds a chat stream as a client does: reasoning and content concatenated, tool calls assembled by index.
  const fold = async (stream) => {
    const m = { reasoning: "", content: "", calls: [], finish: null, ids: new Set(), tokens: [] };
    for await (const chunk of stream) {
      m.ids.add(chunk.id);
      for (const c of chunk.choices) {
        const d = c.delta;
        for (const [field, key] of [["reasoning_content", "reasoning"], ["content", "content"]]) {
          if (d[field] == null) continue;
          assert.doesNotMatch(d[field], markers, `a marker in delta.${field}`);
          m[key] += d[field];
        }
        for (const tc of d.tool_calls ?? []) {
          if (tc.index === m.calls.length) {
            assert.ok(tc.id?.startsWith("call_") && tc.type === "function" && tc.function.arguments === "",
                      JSON.stringify(tc));
            m.calls.push({ id: tc.id, name: tc.function.name, arguments: "" });
          } else {
            assert.equal(tc.id, undefined);
            m.calls[tc.index].arguments += tc.function.arguments;
          }
        }
        m.tokens.push(...(c.token_ids ?? []));
        if (c.finish_reason) m.finish = c.finish_reason;
      }
    }
    assert.equal(m.ids.size, 1);
    return m;
  };

  let firstAnswer = null;
  await check("scripted: reasoning_content, content and a tool call (--reasoning-parser deepseek_r1)", async () => {
    const r = await r1Client.chat.completions.create({ ...ask, return_token_ids: true });
    assert.deepEqual(r.prompt_token_ids, turn1.prompt_ids);
    const [choice] = r.choices;
    assert.deepEqual(choice.token_ids, turn1.token_ids);
    assert.equal(choice.message.reasoning_content, script.reasoning);
    assert.equal(choice.message.content, script.content);
    assert.equal(choice.message.tool_calls.length, 1);
    const [call] = choice.message.tool_calls;
    assert.match(call.id, /^call_/);
    assert.equal(call.type, "function");
    assert.deepEqual(call.function, expectedCall);
    assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris", unit: "celsius" });
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(r.usage.completion_tokens, turn1.token_ids.length);
    firstAnswer = r;
  });

  await check("scripted streamed: reasoning, content and tool-call deltas reassemble to the same answer", async () => {
    const m = await fold(await r1Client.chat.completions.create({ ...ask, stream: true, return_token_ids: true }));
    assert.equal(m.reasoning, script.reasoning);
    assert.equal(m.content, script.content);
    assert.deepEqual(m.calls.map(({ name, arguments: a }) => ({ name, arguments: a })), [expectedCall]);
    assert.equal(m.finish, "tool_calls");
    assert.deepEqual(m.tokens, turn1.token_ids);
    // The client's own stream helper assembles the same message.
    const final = await r1Client.chat.completions.stream({ ...ask }).finalChatCompletion();
    assert.equal(final.choices[0].message.content, script.content);
    assert.deepEqual(final.choices[0].message.tool_calls.map((t) => t.function), [expectedCall]);
    assert.equal(final.choices[0].finish_reason, "tool_calls");
  });

  await check("scripted without the reasoning parser: the thinking stays content, the call is still parsed", async () => {
    const r = await plainClient.chat.completions.create(ask);
    const [choice] = r.choices;
    assert.equal(choice.message.reasoning_content, undefined);
    assert.equal(choice.message.content, `<think>${script.reasoning}</think>${script.content}`);
    assert.deepEqual(choice.message.tool_calls.map((t) => t.function), [expectedCall]);
    assert.equal(choice.finish_reason, "tool_calls");
    // tool_choice "none": no parsing, the text as HF decodes it.
    const none = await plainClient.chat.completions.create({ ...ask, tool_choice: "none" });
    assert.equal(none.choices[0].message.content, turn1.text);
    assert.equal(none.choices[0].message.tool_calls, undefined);
    assert.equal(none.choices[0].finish_reason, "stop");
    await assert.rejects(plainClient.chat.completions.create({ ...ask, tool_choice: "required" }),
                         (e) => e instanceof OpenAI.BadRequestError && e.param === "tool_choice");
  });

  await check("scripted second turn: the tool's result goes back and the answer comes", async () => {
    assert.ok(firstAnswer, "the first turn failed");
    const [call] = firstAnswer.choices[0].message.tool_calls;
    // DeepSeek-V3's template renders an assistant turn's tool calls only when its content is null.
    const messages = [...turn1.messages,
                      { role: "assistant", content: null, tool_calls: [call] },
                      { role: "tool", tool_call_id: call.id, content: turn2.messages[3].content }];
    const r = await plainClient.chat.completions.create({ model: servedName, messages, tools: turn1.tools,
                                                          temperature: 0, return_token_ids: true });
    assert.deepEqual(r.prompt_token_ids, turn2.prompt_ids);
    assert.deepEqual(r.choices[0].token_ids, turn2.token_ids);
    assert.equal(r.choices[0].message.content, script.answer_after_tool);
    assert.equal(r.choices[0].message.tool_calls, undefined);
    assert.equal(r.choices[0].finish_reason, "stop");
    const m = await fold(await plainClient.chat.completions.create({ model: servedName, messages, tools: turn1.tools,
                                                                     temperature: 0, stream: true }));
    assert.equal(m.content, script.answer_after_tool);
    assert.equal(m.finish, "stop");
    // With the R1 parser an answer that never closes a thinking block is all reasoning, as in vLLM.
    const split = await r1Client.chat.completions.create({ model: servedName, messages, tools: turn1.tools,
                                                           temperature: 0 });
    assert.equal(split.choices[0].message.reasoning_content, script.answer_after_tool);
    assert.equal(split.choices[0].message.content, null);
  });

  await check("serve refuses a reasoning or tool-call parser it does not have", async () => {
    for (const args of [["--reasoning-parser", "qwen3"], ["--tool-call-parser", "hermes"]]) {
      const r = spawnSync(binary, ["serve", "--model", scriptedDir, "--port", "0", ...args], { encoding: "utf8",
                                                                                         timeout: 30000 });
      assert.notEqual(r.status, 0, args.join(" "));
      assert.match(r.stderr + r.stdout, new RegExp(args[0]));
    }
  });

  for (const s of [r1, plain]) {
    const gone = new Promise((resolve) => s.proc.on("exit", (c) => resolve(c)));
    s.proc.kill("SIGTERM");
    const c = await gone;
    if (c !== 0) await check("scripted servers exit 0 on SIGTERM", async () => assert.equal(c, 0));
  }
}

const failed = results.filter(([, e]) => e);
console.log(`\n${results.length - failed.length} passed, ${failed.length} failed (model ${path.basename(model)}, ` +
            `device ${process.env.DEEPSERVE_E2E_DEVICE ?? "cpu"})`);
process.exit(failed.length ? 1 : 0);
