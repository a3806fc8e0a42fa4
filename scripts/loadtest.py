#!/usr/bin/env python3
"""Load test for `athena serve`: aggregate decode throughput at several concurrencies.

    python3 scripts/loadtest.py --url http://127.0.0.1:8080 [--concurrency 1,4,16,64]
                                [--max-tokens 32] [--time-limit 300] [--ban-ids 0,50279]

Standard library only; loopback only (any other host is refused). For each concurrency c it
opens c streams of /v1/completions at once (greedy, eos banned through logit_bias so every
stream produces exactly --max-tokens tokens; --ban-ids names the banned ids; prompt: a short
fixed text) and measures, per stream, the time of its first and last token. Aggregate decode tok/s = the tokens produced
after each stream's first one, summed over streams, divided by the window from the earliest
first token to the latest last token (prefills of streams that join inside the window count
against it). It also prints end-to-end tokens/s (all tokens / wall time of the level), and the time to
first token (from sending the request to its first streamed token) at the 50th and 99th
percentiles over the level's streams (linear interpolation between ranks, numpy's default).

Steady decode tok/s: the rate while every stream of the level is decoding, that is over the
window from the latest first token to the earliest last token (no prefill falls inside it,
since every stream has had its first token). Tokens inside it are counted from each stream's
streamed chunks, each chunk weighted by the stream's completion tokens per chunk (a chunk may
carry the text of more than one token when a character spans tokens). Null when the window
is empty (one stream finished before another started).

Bounded: each level runs its c streams once; the whole test stops at --time-limit seconds.
One JSON line per level.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

PROMPT = "The history of the city begins with a small market by the river, where"


def stream_once(host, port, max_tokens, banned, out, idx, deadline):
    body = json.dumps({
        "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "logit_bias": {str(t): -100 for t in banned}, "stream_options": {"include_usage": True},
    })
    t0 = time.monotonic()
    first = last = None
    tokens = 0
    chunks = []
    try:
        conn = http.client.HTTPConnection(host, port, timeout=max(1, deadline - time.monotonic()))
        conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            out[idx] = {"error": f"{resp.status} {resp.read()[:200]!r}"}
            return
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            msg = json.loads(data)
            if "error" in msg:
                out[idx] = {"error": msg["error"]["message"]}
                return
            if msg.get("choices") and msg["choices"][0].get("finish_reason") is None:
                now = time.monotonic()
                first = first or now
                last = now
                chunks.append(now)
            if msg.get("usage"):
                tokens = msg["usage"]["completion_tokens"]
            if msg.get("choices") and msg["choices"][0].get("finish_reason"):
                last = time.monotonic()
        conn.close()
    except Exception as e:  # noqa: BLE001
        out[idx] = {"error": repr(e)}
        return
    out[idx] = {"start": t0, "first": first, "last": last, "tokens": tokens, "chunks": chunks}


def percentile(values, q):
    """The q-th percentile (0..100) of values, interpolated linearly between ranks."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def steady_rate(ok):
    """Tokens per second over the window in which every stream is decoding, or None."""
    start = max(o["first"] for o in ok)
    end = min(o["last"] for o in ok)
    if end <= start:
        return None, 0.0
    tokens = 0.0
    for o in ok:
        if not o["chunks"]:
            continue
        per_chunk = o["tokens"] / len(o["chunks"])
        # Chunks strictly after the window's start: each is a token decoded inside it.
        tokens += per_chunk * sum(1 for t in o["chunks"] if start < t <= end)
    return round(tokens / (end - start), 2), round(end - start, 2)


def level(host, port, c, max_tokens, banned, deadline):
    out = [None] * c
    threads = [threading.Thread(target=stream_once,
                                args=(host, port, max_tokens, banned, out, i, deadline))
               for i in range(c)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    wall = time.monotonic() - t0
    ok = [o for o in out if o and "error" not in o and o["first"]]
    errors = [o["error"] for o in out if o and "error" in o]
    if not ok:
        return {"concurrency": c, "failed": len(out), "errors": errors[:3]}
    # Decode window: from the first stream's first token to the last stream's last token.
    window = max(o["last"] for o in ok) - min(o["first"] for o in ok)
    decode_tokens = sum(o["tokens"] - 1 for o in ok)
    steady, steady_window = steady_rate(ok)
    ttft = [o["first"] - o["start"] for o in ok]
    return {
        "concurrency": c,
        "ok": len(ok),
        "failed": len(out) - len(ok),
        "errors": errors[:3],
        "tokens_per_stream": max_tokens,
        "aggregate_decode_tok_s": round(decode_tokens / window, 2) if window > 0 else None,
        "decode_window_s": round(window, 2),
        "steady_decode_tok_s": steady,
        "steady_window_s": steady_window,
        "per_stream_decode_tok_s": round(
            sum((o["tokens"] - 1) / (o["last"] - o["first"]) for o in ok if o["last"] > o["first"]) / len(ok), 2),
        "end_to_end_tok_s": round(sum(o["tokens"] for o in ok) / wall, 2),
        "ttft_p50_s": round(percentile(ttft, 50), 4),
        "ttft_p99_s": round(percentile(ttft, 99), 4),
        "wall_s": round(wall, 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=600)
    ap.add_argument("--ban-ids", default="0,50279",
                    help="token ids never sampled (OLMoE's eos and pad by default)")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadtest.py talks to loopback only")
    deadline = time.monotonic() + a.time_limit
    for c in [int(x) for x in a.concurrency.split(",")]:
        if c < 1 or c > 256:
            sys.exit("concurrency must be in 1..256")
        if time.monotonic() > deadline:
            print(json.dumps({"concurrency": c, "skipped": "time limit"}))
            continue
        banned = [int(x) for x in a.ban_ids.split(",") if x]
        print(json.dumps(level(u.hostname, u.port or 80, c, a.max_tokens, banned, deadline)),
              flush=True)


if __name__ == "__main__":
    main()
