#!/usr/bin/env python3
"""RSS per slow-reading client (issue: memory per slow reader).

Starts a Python file server with an 8 MiB file and the balancer in front of
it (or measures a running PID with --pid and --port), opens N clients whose
receive buffer is 4 KiB, asks each for the file and reads nothing, then
prints the balancer's RSS before and after and the growth per client.
Loopback only. Usage: scripts/slow_readers.py [--clients 200] [--binary target/release/fulcrum]
"""
import argparse, os, socket, subprocess, sys, tempfile, time

from loopback import free_port, rss_kib, wait_port




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--binary", default="target/release/fulcrum")
    ap.add_argument("--pid", type=int, help="measure this running balancer instead")
    ap.add_argument("--port", type=int, help="its listener port (with --pid)")
    ap.add_argument("--path", default="/big")
    a = ap.parse_args()
    procs = []
    try:
        if a.pid:
            pid, port = a.pid, a.port
        else:
            root = tempfile.mkdtemp()
            with open(os.path.join(root, "big"), "wb") as f:
                f.write(os.urandom(8 << 20))
            backend = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(backend), "--bind", "127.0.0.1", "-d", root],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(backend)
            port = free_port()
            conf = os.path.join(root, "lb.toml")
            with open(conf, "w") as f:
                f.write(f'[server]\nworker_threads = 1\n[[listeners]]\nname = "web"\nlisten = "127.0.0.1:{port}"\npool = "app"\n'
                        f'[pools.app]\nbackends = [{{ address = "127.0.0.1:{backend}" }}]\n')
            procs.append(subprocess.Popen([a.binary, "run", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            pid = procs[-1].pid
        time.sleep(0.5)
        before = rss_kib(pid)
        clients = []
        for _ in range(a.clients):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {a.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append(s)
        time.sleep(5)
        after = rss_kib(pid)
        # Another client is still served while the slow ones hold on.
        probe = socket.create_connection(("127.0.0.1", port), 5)
        probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = probe.recv(64)
        served = first.split(b"\r\n")[0].split(b" ")[1:2] == [b"200"]
        if not served:
            print("other client got:", first[:64])
        print(f"clients={a.clients} rss_before_kib={before} rss_after_kib={after} "
              f"per_client_kib={(after - before) / a.clients:.1f} other_client_served={served}")
        for s in clients:
            s.close()
    finally:
        for p in procs:
            p.terminate()

if __name__ == "__main__":
    main()
