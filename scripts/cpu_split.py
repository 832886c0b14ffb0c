#!/usr/bin/env python3
"""Where each balancer's CPU goes on each path: user space or the kernel.

Runs the scenarios of the shared benchmarks (lbbench.py's HTTP/1.1
keep-alive as `h1`, and any of perfsuite.py's) with their own loads and
configs, but reads the balancer's user and system CPU separately from
/proc. A balancer's system time on loopback is mostly the kernel's TCP work
for the system calls the protocol needs (a send also runs the receiver's
side of TCP); a path whose goal lies below Fulcrum's system time alone
cannot be reached by any change in user space.

    scripts/cpu_split.py --rounds 2 --secs 5 --scenarios h1,http-close,h2c,tcp-relay

Needs what scripts/bench.sh needs; BENCH_DIR (default ../shared/bench)
points at the benchmark scripts, and target/release/fulcrum must be built.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.realpath(os.environ.get("BENCH_DIR", os.path.join(ROOT, "..", "shared", "bench")))
sys.path.insert(0, BENCH)
import lbbench as lb  # noqa: E402
import perfsuite as ps  # noqa: E402

FULCRUM = os.path.join(ROOT, "target", "release", "fulcrum")
samples = []  # (user, system) ticks at each reading


def tree_cpu_split(pid):
    """lbbench's tree_cpu, keeping user and system ticks apart."""
    user = system = 0
    for p in lb.tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    samples.append((user, system))
    return user + system


def h1_command(name, fulcrum=FULCRUM):
    """The command running contender `name` for lbbench's keep-alive load,
    with the shared benchmarks' configs."""
    return {
        "fulcrum": f"{fulcrum} run -c {BENCH}/fulcrum.toml",
        "haproxy": f"haproxy -db -f {BENCH}/peers/lb.haproxy.cfg",
        "nginx": f"nginx -p /tmp/lbbench -c {BENCH}/peers/lb.nginx.conf",
    }[name]


def run(scenario, name, secs):
    """One measurement: (user, system) per unit of work, or None."""
    if scenario == "h1":
        os.makedirs("/tmp/lbbench", exist_ok=True)
        result = lb.measure(name, h1_command(name), secs, 64)
    else:
        ps.FULCRUM = FULCRUM
        result = ps.measure(name, scenario, secs)
    units = result.get("reqs", 0)
    if result.get("error") or not units:
        print(f"  {scenario} {name}: {result.get('error', 'no work done')}", flush=True)
        return None
    (u0, s0), (u1, s1) = samples[-2], samples[-1]
    per_unit = 1e6 / lb.TICK / units / (1000 if scenario == "tcp-bulk" else 1)
    return (u1 - u0) * per_unit, (s1 - s0) * per_unit


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--scenarios", default="h1,http-close,h2c,tls-handshake,tcp-relay")
    a = ap.parse_args()
    lb.tree_cpu = tree_cpu_split
    contenders = ["fulcrum"] + [peer for peer in ("haproxy", "nginx") if shutil.which(peer)]
    ps.setup()
    backends = lb.start_backends()
    bulk = subprocess.Popen(["nginx", "-p", ps.W, "-c", f"{ps.W}/bulk.nginx.conf"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = {}
    try:
        for r in range(a.rounds):
            for scenario in a.scenarios.split(","):
                for name in contenders:
                    split = run(scenario, name, a.secs)
                    if split:
                        results.setdefault((scenario, name), []).append(split)
                        print(f"round {r + 1} {scenario} {name}: user {split[0]:.1f} system {split[1]:.1f}",
                              flush=True)
    finally:
        if backends:
            lb.stop(backends)
        lb.stop(bulk)
    print("\nmedians, µs per request (ms per GB for tcp-bulk)")
    print(f"{'scenario':<14}{'contender':<10}{'user':>8}{'system':>8}{'total':>8}{'system share':>14}")
    for (scenario, name), splits in results.items():
        user = statistics.median(s[0] for s in splits)
        system = statistics.median(s[1] for s in splits)
        print(f"{scenario:<14}{name:<10}{user:>8.1f}{system:>8.1f}{user + system:>8.1f}"
              f"{system / (user + system) * 100:>13.0f}%")


if __name__ == "__main__":
    main()
