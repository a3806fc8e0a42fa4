#!/usr/bin/env python3
"""Load test of the memory bank over HTTP: CLIENTS clients add, search, update and delete
memories concurrently for SECONDS against one bank served by `athena serve --memory-db`
(one server, or several replicas sharing a PostgreSQL bank), then the bank's final contents
are compared with what the clients were told.

    scripts/load_memory.py --url http://127.0.0.1:8080 [--url ...] [--key KEY] [--clients 16] [--seconds 120]
    scripts/load_memory.py --athena target/release/athena --model fixtures/models/base \\
        --memory-db /tmp/load.db [--replicas 2] [...]   # starts the server(s) itself (port 0)

Each client speaks plain HTTP/1.1 (one kept-alive connection, the routes and bodies the
official mem0 client sends, `Authorization: Token KEY`) as one of USERS users, so several
clients share each scope; with several servers, client n talks to server n mod N. Per step it adds a new fact (50%), searches (35%), adds a fact its
user already holds (5%, must be NONE with the holder's id), updates one of its memories (5%)
or deletes one (5%). A failed request is any answer but 200 or a transport error. At the end
every user's memories must be exactly the ones the clients were told exist, with the texts
they were last told, as every server lists them: anything else is a lost (or phantom) memory. Prints a summary (and JSON
with --json); exits 1 on any failure or loss.
"""

import argparse
import http.client
import json
import random
import subprocess
import sys
import threading
import time
import urllib.parse

OPS = [("add", 50), ("search", 35), ("again", 5), ("update", 5), ("delete", 5)]


class Client:
    def __init__(self, url, key):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Token {key}"
        self.conn = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text else None)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed while idle: open a new one once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run_client(n, args, stop, out, users):
    rng = random.Random(args.seed * 1000 + n)
    user = users[n % len(users)]
    q = urllib.parse.urlencode({"user_id": user})
    c = Client(args.url[n % len(args.url)], args.key)
    mine = {}  # id -> text this client was last told
    lat = {op: [] for op, _ in OPS}
    failures = []
    step = 0

    def call(op, method, path, body=None):
        t = time.perf_counter()
        try:
            status, answer = c.call(method, path, body)
        except Exception as e:  # a transport failure is a failed request
            failures.append(f"{op}: {type(e).__name__}: {e}")
            return None
        lat[op].append(time.perf_counter() - t)
        if status != 200:
            failures.append(f"{op}: {status} {answer}")
            return None
        return answer

    while not stop.is_set():
        step += 1
        op = rng.choices([o for o, _ in OPS], [w for _, w in OPS])[0]
        if op in ("again", "update", "delete") and not mine:
            op = "add"
        if op == "add":
            text = f"client {n} fact {step}: likes {rng.choice(WORDS)} and {rng.choice(WORDS)}"
            r = call(op, "POST", f"/v3/memories/add/?{q}", {
                "messages": [{"role": "user", "content": text}],
                "filters": {"user_id": user}, "infer": False, "use_head": False})
            if r is not None:
                e = r["results"][0]
                if e["event"] != "ADD":
                    failures.append(f"add: {e}")
                else:
                    mine[e["id"]] = text
        elif op == "search":
            r = call(op, "POST", f"/v3/memories/search/?{q}", {
                "query": f"who likes {rng.choice(WORDS)}", "filters": {"user_id": user},
                "top_k": 5})
            if r is not None and any(h["user_id"] != user for h in r["results"]):
                failures.append(f"search: another scope's memory in {r}")
        elif op == "again":
            id_, text = rng.choice(sorted(mine.items()))
            r = call(op, "POST", f"/v3/memories/add/?{q}", {
                "messages": [{"role": "user", "content": text}],
                "filters": {"user_id": user}, "infer": False, "use_head": False})
            if r is not None and (r["results"][0]["event"], r["results"][0]["id"]) != ("NONE", id_):
                failures.append(f"again: {r} (held by {id_})")
        elif op == "update":
            id_ = rng.choice(sorted(mine))
            text = f"client {n} fact {step}: now likes {rng.choice(WORDS)}"
            r = call(op, "PUT", f"/v1/memories/{id_}/?{q}", {"text": text})
            if r is not None:
                mine[id_] = text
        else:
            id_ = rng.choice(sorted(mine))
            if call(op, "DELETE", f"/v1/memories/{id_}/?{q}") is not None:
                del mine[id_]
    out[n] = {"user": user, "mine": mine, "lat": lat, "failures": failures}


WORDS = ("tea coffee jazz rain chess bikes maps owls figs kites tango sushi opera dunes "
         "moss lakes trains cedar bread salsa").split()


def bank_contents(url, args, user):
    c = Client(url, args.key)
    q = urllib.parse.urlencode({"user_id": user})
    out, page = {}, 1
    while True:
        status, r = c.call("POST", f"/v3/memories/?{q}&page={page}&page_size=1000",
                           {"filters": {"user_id": user}})
        if status != 200:
            raise SystemExit(f"listing {user}: {status} {r}")
        out.update({m["id"]: m["memory"] for m in r["results"]})
        if r["next"] is None:
            return out
        page += 1


def start_server(args):
    cmd = [args.athena, "serve", "--model", args.model, "--use-mlx", "false", "--port", "0",
           "--memory-db", args.memory_db] + (["--api-key", args.key] if args.key else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    if url is None:
        proc.kill()
        raise SystemExit(f"the server printed no address: {line!r}")
    return proc, url.rstrip("/")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", action="append", default=[])
    p.add_argument("--key", default="")
    p.add_argument("--athena", help="start this athena binary instead of using --url")
    p.add_argument("--model", default="fixtures/models/base")
    p.add_argument("--memory-db")
    p.add_argument("--replicas", type=int, default=1, help="servers --athena starts")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    procs = []
    if args.athena:
        if not args.memory_db:
            raise SystemExit("--athena needs --memory-db")
        for _ in range(args.replicas):
            proc, url = start_server(args)
            procs.append(proc)
            args.url.append(url)
    if not args.url:
        raise SystemExit("give --url or --athena")
    try:
        users = [f"load-user-{i}-{args.seed}" for i in range(args.users)]
        for u in users:
            Client(args.url[0], args.key).call("DELETE", "/v1/memories/?" + urllib.parse.urlencode({"user_id": u}))
        stop, out = threading.Event(), {}
        threads = [threading.Thread(target=run_client, args=(n, args, stop, out, users))
                   for n in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        lost = []
        for u in users:
            told = {}
            for r in out.values():
                if r["user"] == u:
                    told.update(r["mine"])
            for url in args.url:
                held = bank_contents(url, args, u)
                for id_ in told.keys() - held.keys():
                    lost.append(f"{url} {u}: {id_} ({told[id_]!r}) is missing")
                for id_ in held.keys() - told.keys():
                    lost.append(f"{url} {u}: {id_} ({held[id_]!r}) was never told")
                for id_ in told.keys() & held.keys():
                    if told[id_] != held[id_]:
                        lost.append(f"{url} {u}: {id_} holds {held[id_]!r}, told {told[id_]!r}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    failures = [f for r in out.values() for f in r["failures"]]
    summary = {"clients": args.clients, "users": args.users, "servers": len(args.url),
               "seconds": round(wall, 1),
               "failed": len(failures), "lost": len(lost),
               "memories": sum(len(r["mine"]) for r in out.values()), "ops": {}}
    total = 0
    for op, _ in OPS:
        xs = [x for r in out.values() for x in r["lat"][op]]
        total += len(xs)
        summary["ops"][op] = {"n": len(xs), "per_s": round(len(xs) / wall, 1),
                              "p50_ms": round(1000 * percentile(xs, 50), 1),
                              "p95_ms": round(1000 * percentile(xs, 95), 1),
                              "p99_ms": round(1000 * percentile(xs, 99), 1)}
    summary["requests"], summary["per_s"] = total, round(total / wall, 1)
    print(f"{args.clients} clients, {args.users} users, {len(args.url)} server(s), "
          f"{wall:.0f} s: {total} requests "
          f"({total / wall:.1f}/s), {len(failures)} failed, {len(lost)} lost, "
          f"{summary['memories']} memories at the end")
    for op, s in summary["ops"].items():
        print(f"  {op:7} {s['n']:7} ({s['per_s']:7.1f}/s)  p50 {s['p50_ms']:8.1f} ms  "
              f"p95 {s['p95_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms")
    for line in (failures + lost)[:20]:
        print("  " + line)
    if args.json:
        print(json.dumps(summary))
    sys.exit(1 if failures or lost else 0)


if __name__ == "__main__":
    main()
