#!/usr/bin/env python3
"""User-space instructions per request, each balancer under callgrind.

CPU time on these shared machines varies ±25% between rounds; the number
of instructions a balancer executes per request does not, so it is the
before/after measure of a change in user space (it misses what the kernel
does, and valgrind hides some CPU features: SHA and ADX crypto run in
their generic code). Each contender runs twice under
`valgrind --tool=callgrind` with the scenario's config from the shared
benchmarks and an exact number of requests from h2load (a warm-up, then
`--requests` in one run and `--requests` + `--extra` in the other); the
difference of the two runs' totals over `--extra` is the cost of one
request, start, warm-up and exit cancelling out:

    scripts/instructions.py --scenarios h1,h2c,http-close

Scenarios: `h1` (lbbench's HTTP/1.1 keep-alive, 64 connections), `h2c`
(perfsuite's, 32 connections x 16 streams), `http-close` (a new
connection per request, 32 at once). Needs valgrind and h2load besides
what scripts/bench.sh needs; BENCH_DIR (default ../shared/bench) points at
the benchmark scripts, and target/release/fulcrum must be built (or pass
`--fulcrum`).
"""
import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.realpath(os.environ.get("BENCH_DIR", os.path.join(ROOT, "..", "shared", "bench")))
sys.path.insert(0, BENCH)
import lbbench as lb  # noqa: E402
import perfsuite as ps  # noqa: E402
from cpu_split import h1_command  # noqa: E402

OUT = "/tmp/instructions"


def command(contender, scenario, fulcrum):
    """The contender's command line for the scenario, from the benchmarks' configs."""
    if scenario == "h1":
        return h1_command(contender, fulcrum)
    ps.FULCRUM = fulcrum
    return ps.cfg(contender, scenario)


def single_process(command_line):
    """nginx's worker, run as the only process (callgrind loses a forked
    worker's counts when the master stops it); others unchanged."""
    config = re.search(r"^nginx -p (\S+) -c (\S+)$", command_line)
    if not config:
        return command_line
    prefix, path = config.groups()
    single = f"{OUT}/{os.path.basename(path)}"
    with open(path) as original, open(single, "w") as copy:
        copy.write("master_process off;\n" + original.read())
    return f"nginx -p {prefix} -c {single}"


def load(scenario, requests):
    """Exactly `requests` requests through 127.0.0.1:8080."""
    shape = {
        "h1": ["--h1", "-c64", "-m1"],
        "h2c": ["-c32", "-m16"],
        "http-close": ["--h1", "-c32", "-m1", "-H", "Connection: close"],
    }[scenario]
    out = subprocess.run(["h2load", *shape, f"-n{requests}", "http://127.0.0.1:8080/"],
                         capture_output=True, text=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not done or int(done.group(1)) != requests:
        raise RuntimeError(f"h2load: {out[-300:]}")


def stop(process):
    """SIGTERM, and time for valgrind to write its output as it exits."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise RuntimeError("did not exit on SIGTERM")


def total_instructions(contender, scenario, fulcrum, warmup, requests):
    """Instructions the contender's processes executed, from start to exit."""
    for old in glob.glob(f"{OUT}/cg.*"):
        os.remove(old)
    valgrind = f"valgrind --tool=callgrind --callgrind-out-file={OUT}/cg.%p --trace-children=yes"
    log = open(f"{OUT}/{contender}-{scenario}.log", "ab")
    process = subprocess.Popen(f"exec {valgrind} {single_process(command(contender, scenario, fulcrum))}", shell=True,
                               stdout=log, stderr=log, start_new_session=True)
    try:
        if not lb.wait_port(8080, 120):
            raise RuntimeError("did not listen on 8080")
        load(scenario, warmup)
        load(scenario, requests)
    finally:
        stop(process)
    totals = 0
    for dump in glob.glob(f"{OUT}/cg.*"):
        with open(dump) as f:
            totals += sum(int(line.split()[1]) for line in f if line.startswith("summary:"))
    if not totals:
        raise RuntimeError("no callgrind output")
    return totals


def per_request(contender, scenario, fulcrum, warmup, requests, extra):
    fewer = total_instructions(contender, scenario, fulcrum, warmup, requests)
    more = total_instructions(contender, scenario, fulcrum, warmup, requests + extra)
    return (more - fewer) / extra


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="h1,h2c")
    ap.add_argument("--contenders", default="fulcrum,haproxy,nginx")
    ap.add_argument("--fulcrum", default=os.path.join(ROOT, "target", "release", "fulcrum"))
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--extra", type=int, default=20000)
    a = ap.parse_args()
    contenders = [c for c in a.contenders.split(",") if c == "fulcrum" or shutil.which(c)]
    os.makedirs(OUT, exist_ok=True)
    os.makedirs("/tmp/lbbench", exist_ok=True)
    ps.setup()
    backends = lb.start_backends()
    try:
        print(f"instructions per request (callgrind, {a.extra} requests)", flush=True)
        for scenario in a.scenarios.split(","):
            for contender in contenders:
                try:
                    cost = per_request(contender, scenario, a.fulcrum, a.warmup, a.requests, a.extra)
                    print(f"  {scenario:<11} {contender:<8} {cost / 1000:8.1f}K", flush=True)
                except RuntimeError as e:
                    print(f"  {scenario:<11} {contender:<8} {e}", flush=True)
    finally:
        if backends:
            lb.stop(backends)


if __name__ == "__main__":
    main()
