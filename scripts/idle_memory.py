#!/usr/bin/env python3
"""Memory per idle client connection, Fulcrum side by side with its peers.

Each contender listens on 127.0.0.1:8080 in front of lbbench's nginx
backends (127.0.0.1:9001-9003, started here). For each contender this opens
COUNT connections in batches, either sending one keep-alive request on each
(`keepalive`) or nothing at all (`fresh`), waits for the contender to settle
(Fulcrum's idle connections nap within 2 s), and reports the growth of the
contender's resident memory (all its processes) per connection.

  scripts/idle_memory.py --count 18000 \\
      fulcrum="target/release/fulcrum run -c ../shared/bench/fulcrum.toml" \\
      haproxy="haproxy -db -f ../shared/bench/peers/lb.haproxy.cfg" \\
      nginx="nginx -p /tmp/lbbench -c $PWD/../shared/bench/peers/lb.nginx.conf"

COUNT is bounded by the open-file limit (`ulimit -n`): the contender holds
one descriptor per connection, and so does this script.
"""
import argparse, os, resource, signal, socket, subprocess, sys, time

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")


def tree_rss_kib(pid):
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = open(f"/proc/{p}/task/{p}/children").read().split()
        except FileNotFoundError:
            continue
        todo += [int(c) for c in children]
    return total


def wait_port(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def one(request):
    s = socket.create_connection(("127.0.0.1", 8080))
    if not request:
        return s
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    return s


def measure(cmd, count, batch, request, settle):
    p = subprocess.Popen(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        if not wait_port(8080):
            return "did not listen on 8080"
        for _ in range(200):  # warm up: upstream connections, lazy state
            one(True).close()
        time.sleep(settle)
        base = tree_rss_kib(p.pid)
        held, steps = [], []
        while len(held) < count:
            before = tree_rss_kib(p.pid)
            for _ in range(min(batch, count - len(held))):
                held.append(one(request))
            time.sleep(settle)
            steps.append((tree_rss_kib(p.pid) - before) / batch)
        total = (tree_rss_kib(p.pid) - base) / len(held)
        for s in held:
            s.close()
        return f"{total:6.2f} KiB per connection over {len(held)} (per batch of {batch}: " \
               + ", ".join(f"{s:.2f}" for s in steps) + ")"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait()
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=18000)
    ap.add_argument("--batch", type=int, default=3000)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after each batch")
    ap.add_argument("contenders", nargs="+", help="name=command listening on 127.0.0.1:8080")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.count + 100 > hard:
        sys.exit(f"--count {a.count} needs more descriptors than the limit ({hard})")
    os.makedirs("/tmp/lbbench", exist_ok=True)
    backends = subprocess.Popen(["nginx", "-p", "/tmp/lbbench", "-c", os.path.join(BENCH, "peers/backends.nginx.conf")],
                                start_new_session=True)
    try:
        if not wait_port(9001):
            sys.exit("backends did not start")
        for name, cmd in (c.split("=", 1) for c in a.contenders):
            for mode in ("keepalive", "fresh"):
                print(f"{name:10} {mode:9} {measure(cmd, a.count, a.batch, mode == 'keepalive', a.settle)}",
                      flush=True)
    finally:
        os.killpg(backends.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
