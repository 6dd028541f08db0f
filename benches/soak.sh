#!/usr/bin/env bash
# Soak: 20,000 tasks against the simulator with moderate faults for at least ten minutes.
# Samples the runner's RSS and open file descriptors every 30 s, then checks the final counts
# against the simulator and the audit chain. Figures go into BENCHMARKS.md.
# Usage: benches/soak.sh [RATE]   (default 30/s: 20,000 submissions take about 11 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-30/s}
cargo build --release --quiet --bins
bin=$PWD/target/release/qc-offboard
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - > "$work/m.yaml" <<'PY'
print("version: 1\nticket: SOAK-1\nclusters:")
for c in range(400):
    print(f"  - id: cl-soak{c:04d}\n    zone: {['sh1a', 'pek3', 'gd2'][c % 3]}\n    users:")
    for a in range(50):
        print(f"      - s{c:04d}x{a:02d}")
PY
cat > "$work/w.yaml" <<'YAML'
seed: 42
jobs: {pending_ms: 300, working_ms: 700, fail_rate: 0.02}
faults: {busy_rate: 0.02, internal_rate: 0.01, http_502_rate: 0.01, reset_rate: 0.01, lost_response_rate: 0.01, delay_ms: 5}
YAML
"$bin" sim --listen 127.0.0.1:0 --world "$work/w.yaml" > "$work/sim.out" 2> "$work/sim.err" &
for _ in $(seq 100); do grep -q '^listening on ' "$work/sim.out" && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/sim.out" | head -1)
base=${url%/iaas/}

export QINGCLOUD_ACCESS_KEY=QYACCESSKEYIDEXAMPLE QINGCLOUD_SECRET_KEY=SECRETACCESSKEY
start=$(date +%s)
"$bin" --db "$work/soak.db" --no-progress -q run "$work/m.yaml" --endpoint "$url" --rate "$rate" \
    --max-in-flight 200 --max-attempts 20 > "$work/run.out" 2> "$work/run.err" &
pid=$!
echo "t_s rss_kib fds"
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo -)
  fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
  echo "$(( $(date +%s) - start )) $rss $fds"
  sleep 30
done
wait "$pid" && code=0 || code=$?
echo "exit=$code after $(( $(date +%s) - start )) s"
cat "$work/run.out"
curl -s "$base/sim/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
acc = s["accounts"]
gone = sum(1 for a in acc if not a["exists"])
extra = sum(max(a["del_user_accepted"] - 1, 0) for a in acc)
req, faults, failed = s["requests_by_action"], s["faults_injected"], s["jobs_by_status"].get("failed", 0)
print(f"requests={req} faults={faults}")
print(f"accounts={len(acc)} deleted={gone} repeated_del_user={extra} failed_jobs={failed}")
'
"$bin" --db "$work/soak.db" audit verify
