#!/usr/bin/env python3
"""Server RSS holding N idle [4,4,3] sessions with the built-in cat-dog-ship dataset.

Usage: bench/memory.py PID [N]   (server on 127.0.0.1:8080, started with --max-sessions >= N)
Talks to 127.0.0.1 only; creates N sessions, then prints RSS before and after.
"""
import http.client
import json
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS for pid %s" % pid)


def main():
    pid = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    conn = http.client.HTTPConnection("127.0.0.1", 8080)
    hdr = {"Content-Type": "application/json"}

    def call(method, path, body):
        conn.request(method, path, json.dumps(body), hdr)
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
        return r

    before = rss_kib(pid)
    for i in range(n):
        r = call("POST", "/sessions", {"layers": [4, 4, 3], "init": {"seed": i}})
        call("PUT", r.getheader("Location") + "/dataset", {"builtin": "cat-dog-ship"})
    after = rss_kib(pid)
    print(f"sessions: {n}")
    print(f"RSS before: {before / 1024:.1f} MiB, after: {after / 1024:.1f} MiB")
    print(f"per session: {(after - before) * 1024 / n:.0f} bytes")


if __name__ == "__main__":
    main()
