#!/usr/bin/env python3
"""Two running `deepserve serve` instances on the scripted fixture (tests/fixtures/deepseek_v3_tiny_scripted), one
with --device cpu and one with --device cuda, both with --reasoning-parser deepseek_r1, must give the same answers,
and those answers must be the script HF transformers wrote into expected.json. Python's standard library only, so it
runs on the GPU machine, which has no Node for the openai-client tests (scripts/gpu-check.sh runs it).

    python3 tests/e2e/serve_compare.py --cpu http://127.0.0.1:PORT1 --cuda http://127.0.0.1:PORT2

Exit code 0 when every check passes; each failed check is printed.
"""
import argparse
import json
import os
import sys
import urllib.request

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "deepseek_v3_tiny_scripted")


def post(base, path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read().decode()
    if not stream:
        return json.loads(raw)
    events = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-1:]
    return [json.loads(e) for e in events[:-1]]


def answer(msg):
    """The parts of a chat message that must agree: reasoning, content, tool calls without their random ids."""
    calls = [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls") or []]
    return {"reasoning_content": msg.get("reasoning_content"), "content": msg.get("content"), "tool_calls": calls}


def reassemble(chunks):
    msg = {"reasoning_content": None, "content": None, "tool_calls": []}
    finish = None
    for ch in chunks:
        for choice in ch["choices"]:
            d = choice["delta"]
            for key in ("reasoning_content", "content"):
                if d.get(key):
                    msg[key] = (msg[key] or "") + d[key]
            for tc in d.get("tool_calls") or []:
                while len(msg["tool_calls"]) <= tc["index"]:
                    msg["tool_calls"].append({"type": "function", "function": {"name": "", "arguments": ""}})
                f = tc.get("function") or {}
                msg["tool_calls"][tc["index"]]["function"]["name"] += f.get("name") or ""
                msg["tool_calls"][tc["index"]]["function"]["arguments"] += f.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return answer(msg), finish


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", required=True)
    ap.add_argument("--cuda", required=True)
    args = ap.parse_args()
    with open(os.path.join(FIXTURE, "expected.json")) as f:
        expected = json.load(f)
    script = expected["script"]
    first, second = expected["cases"]
    failures = []

    def check(name, ok, detail=""):
        print(("ok    " if ok else "FAIL  ") + name + ("" if ok else f": {detail}"))
        if not ok:
            failures.append(name)

    body = {"messages": first["messages"], "tools": first["tools"], "temperature": 0, "max_tokens": 32}
    results = {}
    for device in ("cpu", "cuda"):
        base = getattr(args, device)
        r = post(base, "/v1/chat/completions", body)
        got = answer(r["choices"][0]["message"])
        results[device] = got
        check(f"{device}: finish_reason tool_calls", r["choices"][0]["finish_reason"] == "tool_calls",
              r["choices"][0]["finish_reason"])
        check(f"{device}: one call to {script['tool_name']} with the script's arguments",
              got["tool_calls"] == [("function", script["tool_name"], json.loads(script["tool_arguments"]))],
              got["tool_calls"])
        check(f"{device}: the reasoning is the script's, no markers",
              got["reasoning_content"] is not None and got["reasoning_content"].strip() == script["reasoning"].strip()
              and "<think>" not in json.dumps(got), got["reasoning_content"])
        check(f"{device}: the content is the script's", (got["content"] or "").strip() == script["content"].strip(),
              got["content"])
        chunks = post(base, "/v1/chat/completions", dict(body, stream=True), stream=True)
        streamed, finish = reassemble(chunks)
        check(f"{device}: streamed deltas reassemble to the same answer", streamed == got and finish == "tool_calls",
              (streamed, finish))
        r2 = post(base, "/v1/completions", {"prompt": second["prompt_ids"], "temperature": 0, "max_tokens": 32,
                                            "return_tokens_as_token_ids": False})
        check(f"{device}: completion after the tool result is HF's text",
              r2["choices"][0]["text"] == second["text"], r2["choices"][0]["text"])
        tok = post(base, "/tokenize", {"messages": first["messages"], "add_generation_prompt": True})
        check(f"{device}: /tokenize of the conversation is HF's prompt ids", tok.get("tokens") == first["prompt_ids"],
              tok.get("tokens", tok)[:8])
    check("cuda and cpu give the same answer", results["cpu"] == results["cuda"], results)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
