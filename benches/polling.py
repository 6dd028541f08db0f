#!/usr/bin/env python3
"""The polling regime matrix (figures go into BENCHMARKS.md).

Each regime runs the same manifest against a fresh simulator three ways: this tree's release
binary, a baseline binary (the main branch before the poll scheduler, built by
benches/polling.sh), and the official SDK's wait_job pattern (examples/sdk_style: one
DescribeJobs per job every interval). Jobs are scaled down 20x from real ones (0.5 s instead
of 10 s, poll base 150 ms instead of 3 s, the SDK's 2 s wait as 100 ms).

For each it prints calls per deleted account (every request the simulator saw), the floor,
how far above the floor that is, the wall time, and the share of the configured rate used
while there was work to submit: every API call the run recorded in its database (api_calls,
stamped when the rate limiter let it go) from the first to the last RunClusterCustomService,
over that span, against --rate. The SDK pattern keeps no database and is not rate-limited, so
it has no such figure. (The simulator's own request log holds RunClusterCustomService only, so
it cannot give this share: counting from it leaves the DescribeJobs calls out.)

Usage: [VARIANTS=new,main,sdk] benches/polling.py NEW_BIN OLD_BIN SDK_BIN [REGIME ...]
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

ZONES = ["sh1a", "pek3", "gd2"]

# VARIANTS=new,main runs only those (all three by default).
VARIANTS = os.environ.get("VARIANTS", "new,main,sdk").split(",")


def manifest(path, clusters, users, zones=1, night=0):
    with open(path, "w") as f:
        f.write("version: 1\nticket: BENCH-POLL\nclusters:\n")
        for c in range(clusters):
            f.write(f"  - id: cl-poll{c:05d}\n    zone: {ZONES[c % zones]}\n    users:\n")
            for u in range(users):
                f.write(f"      - n{night}u{c:05d}x{u:03d}\n")


def preflight_calls(r):
    """The preflight's DescribeClusters: one per zone and per 100 of its clusters."""
    per_zone = [sum(1 for c in range(r["clusters"]) if c % r["zones"] == z) for z in range(r["zones"])]
    return sum(-(-n // 100) for n in per_zone)


def floor_with_durations(r, in_flight=20):
    """The floor once job durations count (BENCHMARKS.md, "Polling and the quota"): a round
    settles at most M - r*E[d] jobs if every slot's submission is to go on time, with r the
    submissions per second (the rate less the polls), so calls per account are at least
    1 + 1/(M - r*E[d]); solved for r by iteration, preflight added."""
    c = 1.0
    for _ in range(50):
        c = 1 + 1 / min(100, in_flight - r["rate"] / c * r["mean_s"])
    return c + preflight_calls(r) / (r["clusters"] * r["users"])


def floor(r):
    """The regime's floor of calls per account, the preflight's calls included: the run makes
    them whatever its polling does (SPEC: every run checks its clusters first)."""
    return r["floor"] + preflight_calls(r) / (r["clusters"] * r["users"])


# name, clusters, users per cluster, zones, world (jobs and more), run flags, floor, why
REGIMES = {
    "one-cluster": dict(
        clusters=1, users=50, zones=1, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 400}\n",
        flags=[], floor=2.0,
        why="one job at a time: each needs its submission and one poll"),
    "rate-binds": dict(
        clusters=100, users=3, zones=1, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 400}\n",
        flags=[], floor=1 + 1 / 20,
        why="1 + 1/min(in flight 20, 100)"),
    "long-jobs": dict(
        clusters=200, users=1, zones=1, rate=20,
        world="jobs: {pending_ms: 500, working_ms: 2500}\n",
        flags=["--max-in-flight", "100"], floor=1 + 1 / 100,
        why="1 + 1/min(in flight 100, 100)"),
    "mixed": dict(
        clusters=100, users=3, zones=1, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 200, working_ms_max: 1500}\n",
        flags=[], floor=1 + 1 / 20, mean_s=0.95,
        why="1 + 1/min(in flight 20, 100); jobs of 0.3 to 1.6 s"),
    "three-zones": dict(
        clusters=150, users=2, zones=3, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 400}\n",
        flags=["--max-in-flight", "60"], floor=1 + 1 / 20,
        why="a call names one zone's jobs: 1 + 1/min(in flight per zone 20, 100)"),
    "mixed-100": dict(
        clusters=100, users=3, zones=1, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 200, working_ms_max: 1500}\n",
        flags=["--max-in-flight", "100"], floor=1 + 1 / 100,
        why="mixed with --max-in-flight 100: 1 + 1/min(in flight 100, 100)"),
    "seconds": dict(
        clusters=1, users=6, zones=1, rate=10,
        world="jobs: {pending_ms: 500, working_ms: 6000}\n",
        flags=[], floor=2.0, poll="3s", sdk_interval="2s",
        why="real time scale (6.5 s jobs, --poll-interval 3s, the SDK's 2 s): one poll per job"),
    "one-cluster-real": dict(
        clusters=1, users=30, zones=1, rate=10,
        world="jobs: {pending_ms: 500, working_ms: 9500}\n",
        flags=[], floor=2.0, poll="3s", sdk_interval="2s",
        why="one-cluster at the real time scale (10 s jobs, the default --poll-interval 3s, the SDK's 2 s)"),
    "quota-2500": dict(
        clusters=100, users=3, zones=1, rate=10,
        world="jobs: {pending_ms: 100, working_ms: 400}\nquota: {requests: 40, window_s: 5}\n",
        flags=[], floor=1 + 1 / 20,
        why="1 + 1/min(in flight 20, 100), refused calls counted as spent"),
}


# The nightly cron case: a regime run twice on one database, the second night measured.
for _base in ("one-cluster", "seconds"):
    REGIMES[f"{_base}-night-2"] = dict(
        REGIMES[_base], nights=2,
        why=f"{_base}, measured on the second night: the run before it on the same database")


def start_sim(binary, world_path, work):
    out = open(os.path.join(work, "sim.out"), "w+")
    err = open(os.path.join(work, "sim.err"), "w")
    proc = subprocess.Popen([binary, "sim", "--listen", "127.0.0.1:0", "--world", world_path],
                            stdout=out, stderr=err)
    for _ in range(200):
        out.seek(0)
        line = out.readline()
        if line.startswith("listening on "):
            url = line.split()[-1]
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the simulator did not start")


def stats(url):
    base = url.rsplit("/iaas/", 1)[0]
    with urllib.request.urlopen(base + "/sim/stats") as r:
        return json.load(r)


def rate_share(db, rate):
    """Calls per second against `rate` from the last run's first to its last submission."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT action, started_at FROM api_calls "
                           "WHERE run_id = (SELECT MAX(id) FROM runs) ORDER BY started_at").fetchall()
    finally:
        con.close()
    at = [(a, datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) for a, t in rows]
    submits = [t for a, t in at if a == "RunClusterCustomService"]
    if len(submits) < 2:
        return None
    first, last = submits[0], submits[-1]
    n = sum(1 for _, t in at if first <= t <= last)
    span = last - first
    return (n - 1) / span / rate if span > 0 else None


def one(kind, binary, sim_binary, regime, work):
    r = REGIMES[regime]
    w = os.path.join(work, f"{regime}-{kind}-world.yaml")
    with open(w, "w") as f:
        f.write(r["world"])
    proc, url = start_sim(sim_binary, w, work)
    env = dict(os.environ, QINGCLOUD_ACCESS_KEY="QYACCESSKEYIDEXAMPLE", QINGCLOUD_SECRET_KEY="SECRETACCESSKEY")
    db = os.path.join(work, f"{regime}-{kind}.db")
    nights = r.get("nights", 1)
    try:
        # Every night but the last only leaves its runs in the database (and the simulator's
        # accounts of that night deleted); the last night is the one measured.
        for night in range(nights):
            m = os.path.join(work, f"{regime}-{night}.yaml")
            manifest(m, r["clusters"], r["users"], r["zones"], night)
            before = stats(url)
            start = time.monotonic()
            if kind == "sdk":
                in_flight = next((int(v) for k, v in zip(r["flags"], r["flags"][1:]) if k == "--max-in-flight"), 20)
                cmd = [binary, "--endpoint", url, "--manifest", m, "--concurrency", str(in_flight),
                       "--interval", r.get("sdk_interval", "100ms")]
            else:
                cmd = [binary, "--db", db, "--no-progress", "-q", "run", m, "--endpoint", url,
                       "--rate", f"{r['rate']}/s", "--poll-interval", r.get("poll", "150ms"), *r["flags"]]
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            wall = time.monotonic() - start
            s = stats(url)
    finally:
        proc.kill()
        proc.wait()
    calls = s["requests_total"] - before["requests_total"]
    mine = f"n{nights - 1}u"
    deleted = sum(1 for a in s["accounts"] if a["user"].startswith(mine) and not a["exists"])
    share = None if kind == "sdk" else rate_share(db, r["rate"])
    refused = s["ret_codes"].get("2500", 0) - before["ret_codes"].get("2500", 0)
    polls = s["requests_by_action"].get("DescribeJobs", 0) - before["requests_by_action"].get("DescribeJobs", 0)
    return dict(calls=calls, deleted=deleted, expected=r["clusters"] * r["users"],
                per=calls / max(deleted, 1), wall=wall, share=share, refused=refused, polls=polls)


def main():
    new, old, sdk = sys.argv[1:4]
    regimes = sys.argv[4:] or list(REGIMES)
    with tempfile.TemporaryDirectory() as work:
        print("| regime | floor | variant | calls/account | over floor | DescribeJobs | 2500s | wall s | rate used while submitting |")
        print("|---|---|---|---|---|---|---|---|---|")
        for regime in regimes:
            f = floor(REGIMES[regime])
            for kind, binary in (("new", new), ("main", old), ("sdk", sdk)):
                if kind not in VARIANTS:
                    continue
                x = one(kind, binary, new, regime, work)
                done = "" if x["deleted"] == x["expected"] else f" (only {x['deleted']}/{x['expected']} deleted)"
                share = "-" if x["share"] is None else f"{100 * x['share']:.1f} %"
                print(f"| {regime} | {f:.3f} | {kind} | {x['per']:.3f}{done} | {100 * (x['per'] / f - 1):+.1f} % "
                      f"| {x['polls']} | {x['refused']} | {x['wall']:.1f} | {share} |", flush=True)
        print()
        for regime in regimes:
            r = REGIMES[regime]
            n = preflight_calls(r)
            print(f"- {regime}: floor {floor(r):.3f} = {r['why']}, plus the preflight's {n} "
                  f"DescribeClusters call{'s' if n > 1 else ''} over {r['clusters'] * r['users']} accounts")
            if "mean_s" in r:
                print(f"  - with job durations counted (mean {r['mean_s']} s): {floor_with_durations(r):.3f}")


if __name__ == "__main__":
    main()
