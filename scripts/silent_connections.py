#!/usr/bin/env python3
"""Silent connections (issue: no timeout before the first byte).

Starts the balancer (with `ulimit -n` raised) in front of `fulcrum backend`,
opens N connections that never send a byte, and meanwhile makes one GET
every 200 ms on a fresh connection. Prints how many GETs succeeded while the
silent connections were held, and how many silent connections the balancer
had closed 30 s after they were opened. Loopback only.
Usage: scripts/silent_connections.py [--connections 25000]
"""
import argparse, os, resource, socket, subprocess, sys, tempfile, time

from loopback import free_port, wait_port



def get(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), 2)
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ok = s.recv(12).startswith(b"HTTP/1.1 200")
        s.close()
        return ok
    except OSError:
        return False

def open_silent(n, port):
    """Opens n connections that send nothing; 29 s later prints how many the peer closed."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    start = time.time()
    silent = []
    for _ in range(n):
        s = socket.socket(); s.setblocking(False)
        s.connect_ex(("127.0.0.1", port)); silent.append(s)
    time.sleep(max(0.0, 29 - (time.time() - start)))
    closed = 0
    for s in silent:
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    print(closed)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=25000)
    ap.add_argument("--binary", default="target/release/fulcrum")
    ap.add_argument("--open", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.open:
        return open_silent(a.open, a.port)
    root = tempfile.mkdtemp()
    backend, port = free_port(), free_port()
    conf = os.path.join(root, "lb.toml")
    with open(conf, "w") as f:
        f.write(f'[server]\nworker_threads = 1\n[[listeners]]\nname = "web"\nlisten = "127.0.0.1:{port}"\npool = "app"\n'
                f'[pools.app]\nbackends = [{{ address = "127.0.0.1:{backend}" }}]\n')
    procs = [subprocess.Popen([a.binary, "backend", "--listen", f"127.0.0.1:{backend}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([a.binary, "run", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_port(backend); wait_port(port)
        # Open the silent connections from several processes (each has its own fd limit).
        per_proc = 12000
        counts = [min(per_proc, a.connections - i) for i in range(0, a.connections, per_proc)]
        opened = time.time()
        openers = [subprocess.Popen([sys.executable, __file__, "--open", str(n), "--port", str(port)],
                                    stdout=subprocess.PIPE, text=True) for n in counts]
        gets, ok = 0, 0
        while time.time() - opened < 30:
            time.sleep(0.2); gets += 1; ok += get(port)
        for o in openers:
            o.stdin = None
        results = [o.communicate()[0].split() for o in openers]
        closed = sum(int(r[0]) for r in results if r)
        print(f"silent={a.connections} closed_by_30s={closed} gets_ok={ok}/{gets} while they were held")
    finally:
        for p in procs:
            p.terminate()

if __name__ == "__main__":
    main()
