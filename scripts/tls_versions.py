#!/usr/bin/env python3
"""perfsuite's TLS paths, with every balancer on the same TLS version.

perfsuite.py's `tls-handshake` (wrk over https with `Connection: close`, so
one handshake per request, each resuming the session of the one before)
compares balancers on whatever TLS version each negotiates with wrk in its
own default configuration. nginx 1.22 does not enable TLS 1.3 by default
(`ssl_protocols` gained it in 1.23.4), so it answers in TLS 1.2, whose
ticket resumption has no key exchange and issues no new ticket; Fulcrum
and HAProxy answer in TLS 1.3, whose resumption always runs an ECDHE
exchange (RFC 8446 §2.2, `psk_dhe_ke`: forward secrecy) and issues new
tickets. This script measures the same load (`tls-handshake` by default,
or `tls-keepalive` with `--scenario`) twice, once per version:

- TLS 1.2: wrk's OpenSSL is capped at TLS 1.2 (`MaxProtocol`, through an
  `OPENSSL_CONF` file), the balancers keep their configs;
- TLS 1.3: nginx is given `ssl_protocols TLSv1.3`, the others already
  prefer it.

Before each measurement it checks with `openssl s_client` which version
the balancer speaks and that a second connection resumes the first's
session, and prints both beside the CPU per request.

    scripts/tls_versions.py --rounds 3 --secs 5 [--scenario tls-keepalive]

Needs what scripts/bench.sh needs plus the `openssl` command; BENCH_DIR
(default ../shared/bench) points at the benchmark scripts, and
target/release/fulcrum must be built.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.realpath(os.environ.get("BENCH_DIR", os.path.join(ROOT, "..", "shared", "bench")))
sys.path.insert(0, BENCH)
import lbbench as lb  # noqa: E402
import perfsuite as ps  # noqa: E402

CAP_AT_TLS12 = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MaxProtocol = TLSv1.2
"""

perfsuite_config = ps.cfg


def config_for(version):
    """perfsuite's config maker, with nginx on TLS 1.3 when `version` is 1.3."""
    def config(kind, scenario):
        command = perfsuite_config(kind, scenario)
        if kind == "nginx" and version == "1.3":
            path = f"{ps.W}/{scenario}.nginx.conf"
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("ssl_certificate ", "ssl_protocols TLSv1.3; ssl_certificate ", 1))
        return command
    return config


def negotiated(env):
    """The version spoken on 127.0.0.1:8080, and whether a second connection resumed."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    with tempfile.NamedTemporaryFile(suffix=".pem") as session:
        runs = []
        for flag in ("-sess_out", "-sess_in"):
            out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:8080", "-ign_eof",
                                  flag, session.name], input=request, capture_output=True, env=env,
                                 timeout=10).stdout.decode(errors="replace")
            runs.append(out)
    version = re.search(r"^(?:New|Reused), (TLSv[\d.]+)", runs[1], re.M)
    return (version.group(1) if version else "?"), re.search(r"^Reused,", runs[1], re.M) is not None


def measure(name, scenario, version, secs, env):
    """CPU µs per request for balancer `name`, after checking what it speaks."""
    ps.cfg = config_for(version)
    command = ps.cfg(name, scenario)
    process = subprocess.Popen(command, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        if not lb.wait_port(8080):
            return None, "did not listen"
        spoken, resumed = negotiated(env)
    finally:
        lb.stop(process)
        time.sleep(0.5)
    result = ps.measure(name, scenario, secs)
    if result.get("error"):
        return None, result["error"]
    return result["cpu_per_unit_us"], f"{spoken}{', resumed' if resumed else ', NOT resumed'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--scenario", default="tls-handshake", choices=["tls-handshake", "tls-keepalive"])
    a = ap.parse_args()
    ps.FULCRUM = os.path.join(ROOT, "target", "release", "fulcrum")
    contenders = ["fulcrum"] + [peer for peer in ("haproxy", "nginx") if shutil.which(peer)]
    ps.setup()
    backends = lb.start_backends()
    cap = tempfile.NamedTemporaryFile("w", suffix=".cnf", delete=False)
    cap.write(CAP_AT_TLS12)
    cap.close()
    results, spoken = {}, {}
    saved_env = dict(os.environ)
    try:
        for r in range(a.rounds):
            for version in ("1.2", "1.3"):
                os.environ.clear()
                os.environ.update(saved_env)
                if version == "1.2":
                    os.environ["OPENSSL_CONF"] = cap.name
                for name in contenders:
                    cpu, note = measure(name, a.scenario, version, a.secs, dict(os.environ))
                    print(f"round {r + 1} TLS {version} {name}: "
                          + (f"{cpu:.1f} µs per request ({note})" if cpu else note), flush=True)
                    if cpu:
                        results.setdefault((version, name), []).append(cpu)
                        spoken[(version, name)] = note
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.unlink(cap.name)
        if backends:
            lb.stop(backends)
    print(f"\n{a.scenario}: medians, CPU µs per request; ratio = Fulcrum ÷ the best peer on the same version")
    for version in ("1.2", "1.3"):
        medians = {name: statistics.median(v) for (ver, name), v in results.items() if ver == version}
        peers = [m for name, m in medians.items() if name != "fulcrum"]
        for name, m in medians.items():
            print(f"TLS {version}  {name:<8}{m:>8.1f}   {spoken[(version, name)]}")
        if "fulcrum" in medians and peers:
            print(f"TLS {version}  Fulcrum ÷ best peer: {medians['fulcrum'] / min(peers):.2f}×")


if __name__ == "__main__":
    main()
