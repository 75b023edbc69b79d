#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md, on a machine with one CUDA GPU where PyTorch and Ray 2.60
# import (distgan itself from the checkout, no install needed):
#   bash benchmarks/gpu.sh [OUT_DIR]
# 1. jobs/quickstart.yaml with scale.use_gpu: true and one worker (its progress and samples);
# 2. benchmarks/throughput.py --device cuda: distgan's images/s against a plain PyTorch loop.
# It starts its own Ray head on 127.0.0.1 (explicit ports, its own temp dir) and stops only that.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
ray() { python3 -c 'import sys; from ray.scripts.scripts import main; sys.argv[0] = "ray"; main()' "$@"; }
tmp=$(mktemp -d /tmp/dgray-XXXX)
# --block keeps the head in the foreground of its own process group, which the trap ends.
setsid bash -c "$(declare -f ray); ray start --head --block --disable-usage-stats \
    --node-ip-address=127.0.0.1 --port=46990 --include-dashboard=false --num-gpus=1 \
    --temp-dir=$tmp" >"$out/ray-start.log" 2>&1 &
head=$!
trap 'kill -- -$head 2>/dev/null; sleep 3; kill -9 -- -$head 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 60); do grep -q "Ray runtime started" "$out/ray-start.log" && break; sleep 1; done
export RAY_ADDRESS=127.0.0.1:46990
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

python3 -m distgan.cli train jobs/quickstart.yaml --set scale.use_gpu=true --set scale.workers=1 \
    --set run.root="$tmp/runs" 2>&1 | tee "$out/quickstart.log"
cp "$tmp"/runs/*/metrics.jsonl "$out/quickstart-metrics.jsonl"
cp "$(ls "$tmp"/runs/*/samples/step_*.png | tail -n 1)" "$out/quickstart-samples.png"

python3 benchmarks/throughput.py --device cuda --batch 128 --arch mlp --steps 6000 \
    2>&1 | tee "$out/throughput.md"
python3 benchmarks/throughput.py --device cuda --batch 128 --arch dcgan --steps 3000 \
    2>&1 | tee -a "$out/throughput.md"
