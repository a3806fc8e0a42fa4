#!/usr/bin/env python3
"""Soak test for `athena serve`: many concurrent clients for minutes, with the mistakes and
disconnects of real ones, while the server's memory is watched.

    python3 scripts/soak.py [--bin target/debug/athena] [--model fixtures/models/base]
                            [--streams 100] [--minutes 10] [--warmup-minutes 2] [--seed 0]
                            [--out soak.json]

Standard library only; it starts the server itself (with an API key, on a free loopback port)
and stops it at the end. Each of --streams client threads loops until the time is up, each
time picking one of:

- a streamed chat or text completion, read to `[DONE]`, or (a third of them) dropped by the
  client after a few events;
- a whole text completion, an embeddings request, a memory-actions request;
- a memory-bank add (a fact through the head, as the mem0 client sends it; 250 distinct facts
  in all, so that the bank's size is steady after the warm-up) or search, in one of 10 users'
  scopes, on a SQLite bank in a temporary directory;
- a bad request: malformed JSON (400), a wrong type (422), a huge max_tokens (400), a wrong
  API key (401).

An unexpected failure is a 5xx, a status other than the one the request calls for (429, the
server being full, is expected and counted apart), or a connection the server dropped or a
stream that ended without `[DONE]` when the client did not hang up. The server's RSS
(/proc/PID/status VmRSS) is sampled every --sample-seconds; growth is the median RSS over the
last minute against the median over the minute after the warm-up.

Prints one JSON report (and writes it to --out); exits 1 when there was an unexpected
failure or the RSS grew by more than --max-growth percent.
"""

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

KEY = "sk-soak"
CHAT = [{"role": "user", "content": "Tell me about the river and the market by it."}]
WORDS = ["tea", "rome", "cats", "jazz", "rain", "chess", "maps", "figs", "boats", "snow"]


class Tally:
    """Counts by (kind, outcome), the unexpected failures, and the first few of them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = 0
        self.examples = []

    def add(self, kind, outcome, unexpected=False, detail=None):
        with self.lock:
            key = f"{kind}:{outcome}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if unexpected:
                self.unexpected += 1
                if len(self.examples) < 20:
                    self.examples.append({"kind": kind, "outcome": outcome, "detail": detail})


def post(port, path, body, key=KEY, timeout=120):
    """Opens a connection and sends a POST; returns the connection and its response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=payload, headers={
        "content-type": "application/json",
        "authorization": f"Bearer {key}",
    })
    return conn, conn.getresponse()


def whole(port, tally, kind, path, body, expect, key=KEY):
    """A request whose whole answer is read; `expect` is the status it calls for."""
    try:
        conn, res = post(port, path, body, key=key)
        data = res.read()
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        tally.add(kind, "dropped", True, repr(e))
        return
    if res.status == 429:
        tally.add(kind, "429")
    elif res.status != expect:
        tally.add(kind, str(res.status), True, data[:300].decode("utf-8", "replace"))
    else:
        tally.add(kind, str(res.status))


def stream(port, tally, rng, chat):
    """A streamed generation, read to its end or dropped after a few events."""
    kind = "stream_chat" if chat else "stream_completion"
    body = {"max_tokens": rng.randint(8, 64), "stream": True, "temperature": 1.0,
            "seed": rng.randint(0, 1 << 30), "stream_options": {"include_usage": True}}
    if chat:
        body["messages"] = CHAT
        path = "/v1/chat/completions"
    else:
        body["prompt"] = "The history of the city begins with"
        path = "/v1/completions"
    hang_up_after = rng.randint(1, 6) if rng.random() < 1 / 3 else None
    try:
        conn, res = post(port, path, body)
        if res.status != 200:
            data = res.read()
            conn.close()
            if res.status == 429:
                tally.add(kind, "429")
            else:
                tally.add(kind, str(res.status), True, data[:300].decode("utf-8", "replace"))
            return
        events = 0
        done = False
        while True:
            line = res.fp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[len(b"data: "):]
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                tally.add(kind, "error_event", True, event["error"])
                conn.close()
                return
            events += 1
            if hang_up_after is not None and events >= hang_up_after:
                # The client goes away mid-stream: the server must free the sequence.
                conn.sock.shutdown(2)
                conn.close()
                tally.add(kind, "client_disconnect")
                return
        conn.close()
    except (OSError, http.client.HTTPException, ValueError) as e:
        tally.add(kind, "dropped", True, repr(e))
        return
    if done:
        tally.add(kind, "done")
    else:
        tally.add(kind, "ended_without_done", True, f"after {events} events")


def client(port, tally, seed, deadline):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        r = rng.random()
        if r < 0.30:
            stream(port, tally, rng, chat=True)
        elif r < 0.50:
            stream(port, tally, rng, chat=False)
        elif r < 0.58:
            whole(port, tally, "completion", "/v1/completions",
                  {"prompt": "Once upon a time", "max_tokens": rng.randint(1, 32)}, 200)
        elif r < 0.66:
            whole(port, tally, "embeddings", "/v1/embeddings",
                  {"input": ["the river", "the market by the river"]}, 200)
        elif r < 0.76:
            memories = [{"id": f"m{i}", "text": f"memory number {i} about tea"}
                        for i in range(rng.randint(0, 8))]
            whole(port, tally, "memory_actions", "/v1/memory/actions",
                  {"fact": "likes green tea", "memories": memories}, 200)
        elif r < 0.78:
            # A bounded set of facts (250 in all), so that the bank reaches its steady size
            # within the warm-up: later adds meet facts it holds.
            user = f"soak-user-{rng.randrange(10)}"
            fact = f"{user} likes {rng.choice(WORDS[:5])} and {rng.choice(WORDS[5:])}"
            whole(port, tally, "memory_add", f"/v3/memories/add/?user_id={user}",
                  {"messages": [{"role": "user", "content": fact}],
                   "filters": {"user_id": user}, "infer": False}, 200)
        elif r < 0.80:
            user = f"soak-user-{rng.randrange(10)}"
            whole(port, tally, "memory_search", f"/v3/memories/search/?user_id={user}",
                  {"query": f"who likes {rng.choice(WORDS)}", "filters": {"user_id": user},
                   "top_k": 5}, 200)
        elif r < 0.84:
            whole(port, tally, "bad_json", "/v1/chat/completions",
                  b'{"messages": [{"role": "user", "content": "hi"', 400)
        elif r < 0.89:
            whole(port, tally, "bad_type", "/v1/chat/completions",
                  {"messages": "not a list", "max_tokens": "three"}, 422)
        elif r < 0.94:
            whole(port, tally, "huge_max_tokens", "/v1/chat/completions",
                  {"messages": CHAT, "max_tokens": 10 ** 12}, 400)
        else:
            whole(port, tally, "bad_key", "/v1/chat/completions",
                  {"messages": CHAT, "max_tokens": 4}, 401, key="sk-wrong")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "athena"))
    ap.add_argument("--model", default="fixtures/models/base")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-minutes", type=float, default=2.0)
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--server-args", default="--max-concurrency 32 --queue 128",
                    help="extra flags for athena serve")
    a = ap.parse_args()
    if a.minutes <= a.warmup_minutes:
        sys.exit("--minutes must be more than --warmup-minutes")

    env = dict(os.environ, ATHENA_API_KEY=KEY)
    bank_dir = tempfile.TemporaryDirectory(prefix="athena-soak-")
    server = subprocess.Popen(
        [a.bin, "serve", "--model", a.model, "--use-mlx", "false", "--port", "0",
         "--memory-db", os.path.join(bank_dir.name, "soak.db"), *a.server_args.split()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        port = int(url.rstrip("/").rsplit(":", 1)[1])

        tally = Tally()
        start = time.monotonic()
        deadline = start + a.minutes * 60
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic() - start, rss_kib(server.pid)))
                stop.wait(a.sample_seconds)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(port, tally, a.seed * 1000 + i, deadline))
                   for i in range(a.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        sampler.join()
        alive = server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    warm = a.warmup_minutes * 60
    end = samples[-1][0]
    after = [kib for t, kib in samples if warm <= t < warm + 60]
    last = [kib for t, kib in samples if t >= end - 60]
    base, final = statistics.median(after), statistics.median(last)
    growth = (final - base) / base * 100
    total = sum(tally.counts.values())
    report = {
        "streams": a.streams,
        "minutes": a.minutes,
        "warmup_minutes": a.warmup_minutes,
        "requests": total,
        "requests_per_second": round(total / (a.minutes * 60), 1),
        "counts": dict(sorted(tally.counts.items())),
        "unexpected_failures": tally.unexpected,
        "unexpected_examples": tally.examples,
        "server_alive_at_end": alive,
        "rss_mib": {
            "start": round(samples[0][1] / 1024, 1),
            "after_warmup": round(base / 1024, 1),
            "end": round(final / 1024, 1),
            "max": round(max(k for _, k in samples) / 1024, 1),
        },
        "rss_growth_after_warmup_pct": round(growth, 2),
        "rss_samples": len(samples),
        # Every sample, (seconds, MiB), to tell a leak (steady growth) from a plateau.
        "rss_series_mib": [[round(t), round(kib / 1024, 1)] for t, kib in samples],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    ok = tally.unexpected == 0 and alive and growth <= a.max_growth
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
