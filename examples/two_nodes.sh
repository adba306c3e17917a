#!/usr/bin/env bash
# Data-parallel training of the embedded preset (one epoch) as two processes on this machine, joined through
# burn-collective's orchestrator on 127.0.0.1:7500: the README's worked example. Node 0 runs the coordinator,
# evaluates and writes the run folder; node 1 trains its share of every batch. On two machines, run the same
# two commands there with `--coordinator <node 0's address>:7500`.
# HST selects the binary (default: cargo run --release --); OUT the run folders' parent (default: runs).
set -euo pipefail
HST=${HST:-cargo run --release --}
OUT=${OUT:-runs}
$HST train --nodes 2 --node-rank 0 --coordinator 127.0.0.1:7500 --set epochs=1 --out "$OUT/two-nodes" --force &
node0=$!
$HST train --nodes 2 --node-rank 1 --coordinator 127.0.0.1:7500 --set epochs=1 --out "$OUT/two-nodes-rank1" --force
wait "$node0"
echo "two-node run: $OUT/two-nodes (metrics.csv, checkpoints/)"
