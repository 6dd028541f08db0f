#!/usr/bin/env bash
# Multi-host throughput: tasks per second with 1, 2 and 3 runner processes sharing one run through
# one PostgreSQL database, the rate out of the way (--rate 1000/s), against a simulator without
# faults or quota and with fast jobs: 600 accounts over 120 clusters (5 each, so each cluster's
# accounts go one after another). Host 1 starts the run; the others `resume 1` as soon as it is
# live. Each host keeps the default --max-in-flight (20), so more hosts means more jobs at once.
# Figures go into BENCHMARKS.md.
#
# Usage: benches/multihost.sh [HOSTS...]   (default: 1 2 3; builds the release binary first)
# Environment: QC_OFFBOARD_BENCH_PG  the server (default postgres://root@127.0.0.1:5432/test);
#              each measurement gets a fresh database on it, dropped at the end.
#              RATE, POLL, LEASE       runner flags (default 1000/s, 100ms, 3s)
# Needs psql and python3. Ends only the processes it started, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${QC_OFFBOARD_BENCH_PG:-postgres://root@127.0.0.1:5432/test}
rate=${RATE:-1000/s}
poll=${POLL:-100ms}
lease=${LEASE:-3s}
if [[ $# -gt 0 ]]; then counts=("$@"); else counts=(1 2 3); fi

cargo build --release --quiet --bins
bin=$PWD/target/release/qc-offboard
work=$(mktemp -d)
pids=() # every process this script started and has not yet seen end
dbs=()  # every database it created

forget() { # pid: no longer ours to end
  local keep=() p
  for p in ${pids[@]+"${pids[@]}"}; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=(${keep[@]+"${keep[@]}"})
}

cleanup() {
  local p db
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  for db in ${dbs[@]+"${dbs[@]}"}; do
    psql "$server" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" > /dev/null 2>&1 ||
      echo "could not drop the database $db" >&2
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The server's URL with another database name (any query string, such as sslmode, kept).
db_url() {
  python3 - "$server" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
PY
}

python3 - > "$work/m.yaml" <<'PY'
print("version: 1\nticket: BENCH-MH\nclusters:")
for c in range(120):
    print(f"  - id: cl-mh{c:04d}\n    zone: {'pek3' if c % 2 else 'sh1a'}\n    users:")
    for a in range(5):
        print(f"      - u{c:04d}x{a}")
PY
printf 'jobs: {pending_ms: 10, working_ms: 40, fail_rate: 0}\n' > "$work/w.yaml"
tasks=600

# A fresh simulator (its accounts are gone after a measurement); sets SIM_URL and SIM_PID.
start_sim() {
  "$bin" sim --listen 127.0.0.1:0 --world "$work/w.yaml" > "$work/sim.out" 2> "$work/sim.err" &
  SIM_PID=$!
  pids+=("$SIM_PID")
  SIM_URL=
  for _ in $(seq 200); do
    SIM_URL=$(sed -n 's/^listening on //p' "$work/sim.out" | head -1)
    [[ -n $SIM_URL ]] && return 0
    sleep 0.05
  done
  echo "the simulator did not start: $(cat "$work/sim.err")" >&2
  exit 1
}

export QINGCLOUD_ACCESS_KEY=QYACCESSKEYIDEXAMPLE QINGCLOUD_SECRET_KEY=SECRETACCESSKEY

# One measurement with $1 hosts; prints "hosts tasks seconds tasks/s".
measure() {
  local hosts=$1 name url start end i deleted secs code failed=0
  name="qc_bench_$$_${hosts}"
  psql "$server" -qAtc "CREATE DATABASE $name" > /dev/null
  dbs+=("$name")
  url=$(db_url "$name")
  start_sim
  local flags=(--endpoint "$SIM_URL" --rate "$rate" --poll-interval "$poll" --lease "$lease")
  local host_pids=()
  start=$(date +%s.%N)
  "$bin" --no-progress -q --db "$url" run "$work/m.yaml" "${flags[@]}" > "$work/h$hosts-1.out" 2> "$work/h$hosts-1.err" &
  host_pids+=($!)
  pids+=($!)
  if ((hosts > 1)); then
    # Join once host 1's run is live (it holds an unexpired row in run_hosts).
    local live=0
    for _ in $(seq 600); do
      live=$(psql "$url" -qAtc "SELECT count(*) FROM run_hosts WHERE run_id = 1 AND lease_until > clock_timestamp()" 2> /dev/null || echo 0)
      [[ $live =~ ^[1-9] ]] && break
      kill -0 "${host_pids[0]}" 2> /dev/null || break
      sleep 0.02
    done
    if ! [[ $live =~ ^[1-9] ]]; then
      echo "host 1's run never became live; its stderr:" >&2
      cat "$work/h$hosts-1.err" >&2
      exit 1
    fi
    for ((i = 2; i <= hosts; i++)); do
      "$bin" --no-progress -q --db "$url" resume 1 "${flags[@]}" > "$work/h$hosts-$i.out" 2> "$work/h$hosts-$i.err" &
      host_pids+=($!)
      pids+=($!)
    done
  fi
  for i in "${!host_pids[@]}"; do
    code=0
    wait "${host_pids[$i]}" || code=$?
    forget "${host_pids[$i]}"
    if ((code != 0)); then
      failed=1
      echo "host $((i + 1)) of $hosts exited $code; its stderr:" >&2
      tail -20 "$work/h$hosts-$((i + 1)).err" >&2
    fi
  done
  end=$(date +%s.%N)
  kill "$SIM_PID" 2> /dev/null || true
  wait "$SIM_PID" 2> /dev/null || true
  forget "$SIM_PID"
  deleted=$(psql "$url" -qAtc "SELECT count(*) FROM tasks WHERE run_id = 1 AND state = 'deleted'")
  if ((failed)) || [[ $deleted != "$tasks" ]]; then
    echo "warning: $hosts host(s): $deleted of $tasks tasks deleted" >&2
  fi
  secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
  awk -v h="$hosts" -v n="$deleted" -v s="$secs" 'BEGIN { printf "%5d %5d %7.2f %7.1f\n", h, n, s, n / s }'
}

echo "hosts tasks seconds tasks/s"
for n in "${counts[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "not a number of hosts: $n" >&2; exit 2; }
  measure "$n"
done
