#!/usr/bin/env python3
"""Mixed-fault soak of a release build on loopback (run by scripts/soak.sh).

For --seconds (default 600): 4 looping clients send GETs through Fulcrum
while a backend is SIGKILLed and restarted every 5 s, the config is
reloaded with SIGHUP every 7 s, 500 slowloris connections trickle header
bytes, a generator sends malformed requests, and the admin API changes a
backend's weight every 3 s. Reports failed idempotent requests (must be 0),
RSS at 1 minute and at the end (growth must stay under 5%), and open file
descriptors once the load has stopped (must be back at the start's level
plus the idle connections to backends the pool may keep);
exits 1 otherwise.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "fulcrum")
LISTEN, ADMIN = 9700, 9701
BACKENDS = [9710, 9711, 9712]
MAX_IDLE = 16
WORKERS = 2


def config(idle):
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in BACKENDS)
    return f"""
[server]
worker_threads = {WORKERS}
[[listeners]]
name = "web"
listen = "127.0.0.1:{LISTEN}"
pool = "app"
limits = {{ header_read_timeout = "5s" }}
[pools.app]
algorithm = "p2c"
backends = [{backends}]
timeouts = {{ idle = "{idle}" }}
max_idle_per_backend = {MAX_IDLE}
health_check = {{ path = "/health", interval = "200ms", timeout = "200ms", rise = 2, fall = 2 }}
passive_health = {{ consecutive_failures = 3, ejection_time = "2s" }}
retries = {{ attempts = 2, backoff = "5ms" }}
[admin]
listen = "127.0.0.1:{ADMIN}"
"""


def start_backend(port):
    return subprocess.Popen([BINARY, "backend", "--listen", f"127.0.0.1:{port}", "--name", f"b{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_port(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self):
        self.stop = threading.Event()
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.malformed = 0

    def client(self):
        connection = http.client.HTTPConnection("127.0.0.1", LISTEN, timeout=10)
        while not self.stop.is_set():
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                good = response.status == 200
                why = response.status
            except (OSError, http.client.HTTPException) as error:
                good, why = False, repr(error)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", LISTEN, timeout=10)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed.append((time.time(), why))

    def slowloris(self, count):
        sockets = []
        while not self.stop.is_set():
            while len(sockets) < count:
                try:
                    s = socket.create_connection(("127.0.0.1", LISTEN), timeout=2)
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    sockets.append(s)
                except OSError:
                    break
            alive = []
            for s in sockets:
                try:
                    s.sendall(b"X-a: b\r\n")
                    alive.append(s)
                except OSError:
                    s.close()
            sockets = alive
            self.stop.wait(1.0)
        for s in sockets:
            s.close()

    def malformed_requests(self):
        rng = random.Random(7)
        samples = [
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ]
        while not self.stop.is_set():
            payload = rng.choice(samples) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            try:
                s = socket.create_connection(("127.0.0.1", LISTEN), timeout=2)
                s.sendall(payload)
                s.recv(1024)
                s.close()
            except OSError:
                pass
            self.malformed += 1
            self.stop.wait(0.02)

    def killer(self, backends):
        rng = random.Random(11)
        while not self.stop.wait(5.0):
            index = rng.randrange(len(backends))
            backends[index].kill()
            backends[index].wait()
            self.stop.wait(2.0)
            backends[index] = start_backend(BACKENDS[index])

    def reloader(self, lb, path):
        flip = False
        while not self.stop.wait(7.0):
            flip = not flip
            with open(path, "w") as f:
                f.write(config("30s" if flip else "60s"))
            lb.send_signal(signal.SIGHUP)

    def admin_writes(self):
        weight = 1
        while not self.stop.wait(3.0):
            weight = 3 - weight
            body = json.dumps({"weight": weight})
            try:
                c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
                c.request("PATCH", f"/api/v1/pools/app/backends/127.0.0.1:{BACKENDS[0]}", body,
                          {"content-type": "application/json"})
                c.getresponse().read()
                c.close()
            except (OSError, http.client.HTTPException):
                pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    args = parser.parse_args()
    work = tempfile.mkdtemp()
    path = os.path.join(work, "soak.toml")
    with open(path, "w") as f:
        f.write(config("60s"))
    backends = [start_backend(p) for p in BACKENDS]
    for p in BACKENDS:
        wait_port(p)
    lb = subprocess.Popen([BINARY, "run", "-c", path], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(work, "fulcrum.log"), "w"), env={**os.environ, "RUST_LOG": "warn"})
    wait_port(ADMIN)
    time.sleep(1)
    fds_at_start = fds(lb.pid)
    soak = Soak()
    threads = [threading.Thread(target=soak.client) for _ in range(4)]
    threads += [threading.Thread(target=soak.slowloris, args=(500,)),
                threading.Thread(target=soak.malformed_requests),
                threading.Thread(target=soak.killer, args=(backends,)),
                threading.Thread(target=soak.reloader, args=(lb, path)),
                threading.Thread(target=soak.admin_writes)]
    for t in threads:
        t.start()
    started = time.time()
    time.sleep(min(60, args.seconds / 2))
    rss_1min = rss_kib(lb.pid)
    time.sleep(max(0, args.seconds - (time.time() - started)))
    rss_end = rss_kib(lb.pid)
    soak.stop.set()
    for t in threads:
        t.join()
    time.sleep(12)  # idle keep-alives and the last slowloris connections time out
    fds_end = fds(lb.pid)
    lb.terminate()
    lb.wait()
    for b in backends:
        b.kill()
    growth = (rss_end - rss_1min) / rss_1min * 100
    # Idle keep-alive connections to backends may stay open: at most
    # max_idle_per_backend per backend and worker thread. Anything beyond is a leak.
    idle_bound = MAX_IDLE * len(BACKENDS) * WORKERS
    report = {
        "seconds": args.seconds,
        "requests_ok": soak.ok,
        "requests_failed": len(soak.failed),
        "malformed_sent": soak.malformed,
        "rss_kib_at_1min": rss_1min,
        "rss_kib_at_end": rss_end,
        "rss_growth_percent": round(growth, 2),
        "fds_at_start": fds_at_start,
        "fds_after_load": fds_end,
        "fds_allowed_after_load": fds_at_start + idle_bound,
    }
    print(json.dumps(report, indent=2))
    for when, why in soak.failed[:10]:
        print(f"failed at +{when - started:.1f}s: {why}", file=sys.stderr)
    bad = soak.failed or growth >= 5.0 or fds_end > fds_at_start + idle_bound
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
