#!/usr/bin/env python3
"""Drives a running `athena serve` with the official openai client (and raw HTTP for the
requests the client will not send), then prints one JSON summary line and exits non-zero on the
first failed check.

    python scripts/openai_server_test.py http://127.0.0.1:PORT

The server must run the fixture model (fixtures/models/base: context 256, vocab 512, hidden 64)
with at least 16 running sequences and 32 queued places (the defaults: 16 and 64).
"""

import asyncio
import json
import sys
import time

import http.client
import urllib.parse

import openai

BASE = sys.argv[1].rstrip("/")
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=60)
MODEL = client.models.list().data[0].id
HIDDEN = 64
CONTEXT = 256
results = {}
_U = urllib.parse.urlparse(BASE)


class Resp:
    def __init__(self, status, text):
        self.status_code, self.text = status, text

    def json(self):
        return json.loads(self.text)


def raw(method, path, body=None):
    conn = http.client.HTTPConnection(_U.hostname, _U.port, timeout=60)
    conn.request(method, path, body, {"content-type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    out = Resp(r.status, r.read().decode("utf-8", "replace"))
    conn.close()
    return out


def post(url, json_body=None, content=None):
    body = content if content is not None else json.dumps(json_body).encode()
    return raw("POST", urllib.parse.urlparse(url).path, body)


def get(url):
    return raw("GET", urllib.parse.urlparse(url).path)


def check(name, cond, detail=""):
    if not cond:
        print(json.dumps({"failed": name, "detail": str(detail)}))
        sys.exit(1)
    results[name] = "ok"


def metrics():
    out = {}
    for line in get(BASE + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.split()
            out[k] = float(v)
    return out


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]

# Plain chat, greedy.
r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0)
c = r.choices[0]
check("chat", isinstance(c.message.content, str) and c.finish_reason in ("stop", "length"), r)
check("chat_usage", r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 12
      and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)

# The same request streamed gives the same text, then a usage chunk, then [DONE].
text, finish, usage = "", None, None
for chunk in client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage
    for ch in chunk.choices:
        text += ch.delta.content or ""
        finish = ch.finish_reason or finish
check("chat_stream_equals_plain", text == c.message.content and finish == c.finish_reason,
      (text, c.message.content))
check("chat_stream_usage", usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage)

# n choices with a seed; stop strings; default template (the fixture has none).
r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8, temperature=1.0, seed=3, n=3,
                                   stop=["\n", "zz"], top_p=0.9,
                                   extra_body={"min_p": 0.01, "top_k": 50})
check("chat_n", len(r.choices) == 3 and sorted(ch.index for ch in r.choices) == [0, 1, 2], r)
r2 = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8, temperature=1.0, seed=3, n=3,
                                    stop=["\n", "zz"], top_p=0.9,
                                    extra_body={"min_p": 0.01, "top_k": 50})
check("chat_seed_reproducible", [ch.message.content for ch in r.choices]
      == [ch.message.content for ch in r2.choices])

# Completions, plain and streamed.
r = client.completions.create(model=MODEL, prompt="The quick brown", max_tokens=10, temperature=0)
check("completion", isinstance(r.choices[0].text, str) and r.usage.completion_tokens <= 10, r)
streamed = "".join(ch.choices[0].text for ch in client.completions.create(
    model=MODEL, prompt="The quick brown", max_tokens=10, temperature=0, stream=True) if ch.choices)
check("completion_stream_equals_plain", streamed == r.choices[0].text, (streamed, r.choices[0].text))

# Embeddings: the client asks for base64 by default; float too.
e = client.embeddings.create(model=MODEL, input=["hello", "a longer text about memory"])
check("embeddings", len(e.data) == 2 and all(len(d.embedding) == HIDDEN for d in e.data), e)
e2 = client.embeddings.create(model=MODEL, input="hello", encoding_format="float")
check("embeddings_float_equals_base64",
      max(abs(a - b) for a, b in zip(e2.data[0].embedding, e.data[0].embedding)) < 1e-6)

# Memory actions (candle path: the action head is attached).
m = post(BASE + "/v1/memory/actions", {
    "fact": "Alice moved to Paris",
    "memories": [{"id": "m1", "text": "Alice lives in London"}, {"id": "m2", "text": "Bob likes tea"}]})
check("memory_actions", m.status_code == 200 and m.json()["action"]["op"] in ("ADD", "UPDATE", "DELETE", "NOOP"),
      m.text)
m = post(BASE + "/v1/memory/actions", {"fact": "x", "memories": [{"id": "a", "text": "y"},
                                                                           {"id": "a", "text": "z"}]})
check("memory_actions_duplicate_id", m.status_code == 400, m.text)


# 32 concurrent streams, zero failures.
async def many(k):
    aclient = openai.AsyncOpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=120)

    async def one(i):
        out, fin = "", None
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"story number {i}"}],
            max_tokens=16, temperature=0.8, seed=i, stream=True)
        async for chunk in stream:
            for ch in chunk.choices:
                out += ch.delta.content or ""
                fin = ch.finish_reason or fin
        return fin

    res = await asyncio.gather(*(one(i) for i in range(k)), return_exceptions=True)
    await aclient.close()
    return res


steps_before = metrics()["athena_decode_steps_total"]
res = asyncio.run(many(32))
failures = [x for x in res if not isinstance(x, str)]
check("32_concurrent_streams", not failures, failures[:3])
results["32_concurrent_streams_detail"] = {"finish_reasons": sorted(set(res))}

# The bad-request list: each answers 4xx with an OpenAI error body, and the server lives on.
CHAT = BASE + "/v1/chat/completions"
OK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def bad(name, status, body=None, raw_body=None, url=CHAT):
    resp = post(url, content=raw_body) if raw_body is not None else post(url, body)
    ok = resp.status_code == status
    try:
        err = resp.json()["error"]
        ok = ok and isinstance(err["message"], str) and isinstance(err["type"], str)
    except Exception:  # noqa: BLE001
        ok = False
    check("bad:" + name, ok, f"{resp.status_code} {resp.text[:200]}")


bad("malformed_json", 400, raw_body=b'{"messages": [')
bad("invalid_utf8", 400, raw_body=b'{"model": "x", "messages": [{"role": "user", "content": "\xff\xfe"}]}')
bad("not_an_object", 422, raw_body=b'[1, 2, 3]')
bad("wrong_type_messages", 422, {**OK, "messages": "hello"})
bad("wrong_type_max_tokens", 422, {**OK, "max_tokens": "ten"})
bad("missing_messages", 422, {"model": MODEL})
bad("empty_messages", 400, {**OK, "messages": []})
bad("max_tokens_zero", 400, {**OK, "max_tokens": 0})
bad("max_tokens_negative", 400, {**OK, "max_tokens": -5})
bad("max_tokens_beyond_context", 400, {**OK, "max_tokens": CONTEXT + 1})
bad("max_tokens_huge", 400, {**OK, "max_tokens": 2**62})
bad("prompt_beyond_context", 400, {**OK, "messages": [{"role": "user", "content": "word " * 2000}]})
bad("temperature_nan", 400, raw_body=json.dumps({**OK, "temperature": float("nan")}).encode())
bad("temperature_inf", 400, raw_body=json.dumps({**OK, "temperature": float("inf")}).encode())
bad("temperature_out_of_range", 400, {**OK, "temperature": 7})
bad("top_p_out_of_range", 400, {**OK, "top_p": 1.5})
bad("top_p_zero", 400, {**OK, "top_p": 0})
bad("min_p_out_of_range", 400, {**OK, "min_p": 2})
bad("top_k_negative", 400, {**OK, "top_k": -7})
bad("presence_penalty_out_of_range", 400, {**OK, "presence_penalty": 9})
bad("huge_n", 400, {**OK, "n": 1000000})
bad("too_many_stops", 400, {**OK, "stop": [f"s{i}" for i in range(100)]})
bad("logit_bias_out_of_vocab", 400, {**OK, "logit_bias": {"99999999": 5}})
bad("oversized_body", 413, {**OK, "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
bad("completion_token_out_of_vocab", 400, {"model": MODEL, "prompt": [1, 2, 100000], "max_tokens": 2},
    url=BASE + "/v1/completions")
bad("completion_empty_prompt", 400, {"model": MODEL, "prompt": "", "max_tokens": 2},
    url=BASE + "/v1/completions")
bad("embeddings_empty", 400, {"model": MODEL, "input": []}, url=BASE + "/v1/embeddings")
bad("embeddings_wrong_type", 422, {"model": MODEL, "input": 5}, url=BASE + "/v1/embeddings")
bad("memory_wrong_type", 422, {"fact": 3}, url=BASE + "/v1/memory/actions")
try:
    client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=0)
    check("client_bad_request", False, "no error")
except openai.BadRequestError as err:
    check("client_bad_request", err.status_code == 400, err)

# Nothing above poisoned the server.
h = get(BASE + "/health").json()
check("healthy_after_bad_requests", h["status"] == "ok", h)
r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=12, temperature=0)
check("same_answer_after_bad_requests", r.choices[0].message.content == c.message.content)

# A client that disconnects mid-stream frees its sequences at once.
before = metrics()
conn = http.client.HTTPConnection(_U.hostname, _U.port, timeout=60)
conn.request("POST", "/v1/chat/completions", json.dumps({
    "model": MODEL, "messages": [{"role": "user", "content": "go on"}], "max_tokens": 240,
    "n": 16, "stream": True, "logit_bias": {"0": -100}}), {"content-type": "application/json"})
resp = conn.getresponse()
got = 0
for line in resp:
    if line.startswith(b"data:"):
        got += 1
    if got >= 20:
        break
resp.close()
conn.sock and conn.sock.close()
conn.close()
# The connection is closed here, long before 16 × 240 tokens.
deadline = time.time() + 10
while time.time() < deadline:
    h = get(BASE + "/health").json()
    if h["running"] == 0 and h["requests_in_server"] == 0:
        break
    time.sleep(0.02)
after = metrics()
cancelled = after["athena_sequences_cancelled_total"] - before["athena_sequences_cancelled_total"]
check("disconnect_frees_slots", h["running"] == 0 and h["requests_in_server"] == 0, h)
check("disconnect_is_counted", cancelled >= 1,
      {"cancelled": cancelled, "tokens": after["athena_generated_tokens_total"] - before["athena_generated_tokens_total"]})
results["disconnect_detail"] = {"cancelled_sequences": cancelled,
                                "tokens_generated": after["athena_generated_tokens_total"]
                                - before["athena_generated_tokens_total"]}

print(json.dumps({"passed": len([k for k, v in results.items() if v == "ok"]), "details": results}))
