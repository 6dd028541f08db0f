#!/usr/bin/env bash
# Runner benchmarks (figures go into BENCHMARKS.md):
#   1. quota efficiency: 1,000 accounts over 200 clusters, jobs of 2 s, --rate 50/s
#   2. the same work driven like the official SDK's wait_job (one DescribeJobs per job every 2 s)
#   3. raw throughput: 10,000 tasks, rate out of the way, instant jobs
# Usage: benches/runner.sh [1|2|3|all]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
cargo build --release --quiet --bins --examples
bin=target/release/qc-offboard
work=${KEEP:-$(mktemp -d)}; mkdir -p "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT

# A manifest of CLUSTERS clusters spread over two zones with ACCOUNTS accounts each.
gen_manifest() {
  python3 - "$1" "$2" > "$3" <<'PY'
import sys
clusters, accounts = int(sys.argv[1]), int(sys.argv[2])
print("version: 1\nticket: BENCH-1\nclusters:")
for c in range(clusters):
    print(f"  - id: cl-bench{c:05d}\n    zone: {'pek3' if c % 2 else 'sh1a'}\n    users:")
    for a in range(accounts):
        print(f"      - u{c:05d}x{a:03d}")
PY
}

start_sim() { # world file -> sets SIM_URL
  "$bin" sim --listen 127.0.0.1:0 --world "$1" > "$work/sim.out" 2> "$work/sim.err" &
  for _ in $(seq 100); do
    if grep -q '^listening on ' "$work/sim.out"; then break; fi
    sleep 0.05
  done
  SIM_URL=$(sed -n 's/^listening on //p' "$work/sim.out" | head -1)
  SIM_BASE=${SIM_URL%/iaas/}
}

stats() { curl -s "$SIM_BASE/sim/stats"; }

export QINGCLOUD_ACCESS_KEY=QYACCESSKEYIDEXAMPLE QINGCLOUD_SECRET_KEY=SECRETACCESSKEY

if [[ $which == 1 || $which == all ]]; then
  echo "== 1. quota efficiency (1,000 accounts / 200 clusters, 2 s jobs, --rate 50/s)"
  gen_manifest 200 5 "$work/m1.yaml"
  printf 'jobs: {pending_ms: 500, working_ms: 1500, fail_rate: 0}\n' > "$work/w1.yaml"
  start_sim "$work/w1.yaml"
  start=$(date +%s.%N)
  "$bin" --db "$work/b1.db" --no-progress -q run "$work/m1.yaml" --endpoint "$SIM_URL" --rate 50/s --max-in-flight 200 --poll-interval ${POLL:-3s} || true
  end=$(date +%s.%N)
  stats | python3 -c '
import json, sys
s = json.load(sys.stdin); el = float(sys.argv[1])
calls = sum(s["requests_by_action"].values()); deleted = sum(1 for a in s["accounts"] if not a["exists"])
ba = s["requests_by_action"]
print(f"calls={calls} by_action={ba} deleted={deleted} elapsed_s={el:.1f}")
print(f"calls_per_deleted_account={calls/deleted:.3f} achieved_rate={calls/el:.2f}/s of 50/s ({100*calls/el/50:.1f}%)")
' "$(echo "$end - $start" | bc)"
  # The rate while there was work to submit: every call between the first and the last
  # RunClusterCustomService, over that span (the tail after it is only the last jobs finishing).
  python3 - "$work/b1.db" <<'PY2'
import sqlite3, sys
from datetime import datetime
db = sqlite3.connect(sys.argv[1])
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
first, last = db.execute("SELECT min(started_at), max(started_at) FROM api_calls WHERE action = 'RunClusterCustomService'").fetchone()
n = db.execute("SELECT count(*) FROM api_calls WHERE started_at BETWEEN ? AND ?", (first, last)).fetchone()[0]
span = ts(last) - ts(first)
print(f"submission_phase: calls={n} span_s={span:.1f} rate={(n - 1) / span:.2f}/s of 50/s ({100 * (n - 1) / span / 50:.1f}%)")
PY2
  kill %1; wait 2>/dev/null || true
fi

if [[ $which == 2 || $which == all ]]; then
  echo "== 2. the official SDK's way: one DescribeJobs per job every 2 s"
  gen_manifest 200 5 "$work/m2.yaml"
  printf 'jobs: {pending_ms: 500, working_ms: 1500, fail_rate: 0}\n' > "$work/w2.yaml"
  start_sim "$work/w2.yaml"
  target/release/examples/sdk_style --endpoint "$SIM_URL" --manifest "$work/m2.yaml" --concurrency 200
  stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
calls = sum(s["requests_by_action"].values()); deleted = sum(1 for a in s["accounts"] if not a["exists"])
ba = s["requests_by_action"]
print(f"calls={calls} by_action={ba} deleted={deleted} calls_per_deleted_account={calls/deleted:.3f}")
'
  kill %1; wait 2>/dev/null || true
fi

if [[ $which == 3 || $which == all ]]; then
  echo "== 3. raw throughput (10,000 tasks over 1,000 clusters, instant jobs)"
  gen_manifest 1000 10 "$work/m3.yaml"
  printf 'jobs: {pending_ms: 0, working_ms: 0, fail_rate: 0}\n' > "$work/w3.yaml"
  start_sim "$work/w3.yaml"
  /usr/bin/time -v "$bin" --db "$work/b3.db" --no-progress -q run "$work/m3.yaml" --endpoint "$SIM_URL" \
      --rate 100000/s --burst 1000 --max-in-flight 1000 --poll-interval 100ms 2> "$work/time3.txt" || { tail -5 "$work/time3.txt"; }
  grep -E "Elapsed|Maximum resident" "$work/time3.txt"
  python3 - "$work/time3.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", t)
secs = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(f"tasks_per_s={10000/secs:.0f} wall_s={secs:.2f} peak_rss_mib={rss/1024:.1f}")
PY
  kill %1; wait 2>/dev/null || true
fi
