#!/usr/bin/env bash
# The polling regime matrix: this tree against the main branch before the poll scheduler
# (BASELINE, built once into target/baseline from a temporary worktree) and the official SDK's
# wait_job pattern. Figures go into BENCHMARKS.md.
# Usage: [VARIANTS=new,main,sdk] benches/polling.sh [REGIME ...]   (regimes: see benches/polling.py)
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${BASELINE:-dcb2b64}
cargo build --release --quiet --bins --examples
old=target/baseline/release/qc-offboard
if [[ ! -x $old || $(cat target/baseline/rev 2>/dev/null) != "$baseline" ]]; then
  tree=$(mktemp -d)
  git worktree add --quiet --detach "$tree" "$baseline"
  trap 'git worktree remove --force "$tree"' EXIT
  cargo build --release --quiet --bin qc-offboard --manifest-path "$tree/Cargo.toml" --target-dir target/baseline
  echo "$baseline" > target/baseline/rev
fi
python3 benches/polling.py target/release/qc-offboard "$old" target/release/examples/sdk_style "$@"
