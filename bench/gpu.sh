#!/usr/bin/env bash
# The GPU checks, for a lent CUDA machine (see BENCHMARKS.md, "GPU checks").
#
# Runs the GPU tests, `botkit bench serve` in bf16 at 64 users and at 256 users with
# 256 requests, and `botkit bench train --quick`, in under five minutes, and writes logs and JSON to $OUT (default
# /tmp/botkit-gpu-out). Installs nothing: it expects the .venv that `make install` builds (with a
# CUDA build of torch). The embedded model is converted into data/models on the first
# load (~20 s) and loaded from there afterwards.
#
#     OUT=/tmp/gpu bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/botkit-gpu-out}
mkdir -p "$OUT"
BIN=.venv/bin
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
started=$SECONDS
status=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.{out,err}
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s, at $((SECONDS - started))s)"
    timeout "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
    local rc=$?
    echo "   rc=$rc"
    tail -n 25 "$OUT/$name.out"
    [ "$rc" -eq 0 ] || status=1
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$BIN/python" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())'
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step pytest-gpu 60 "$BIN/pytest" -m gpu -q -p no:cacheprovider
# 64 users: every contender and scenario; the sequential baseline on 16 requests (its
# tok/s does not depend on how many).
step serve-u64 110 "$BIN/botkit" bench serve --device cuda --dtype bfloat16 \
    --users 64 --requests 64 --repeat 2 --sequential-requests 16 --json "$OUT/serve-u64.json"
# 256 users over 256 requests: throughput contenders only.
step serve-u256 125 "$BIN/botkit" bench serve --device cuda --dtype bfloat16 \
    --users 256 --requests 256 --repeat 2 --sequential-requests 16 \
    --skip prefix,adapters,fp32_check --json "$OUT/serve-u256.json"

# Training: botkit's loop vs a plain padded loop, in bf16 on the GPU.
step train 60 "$BIN/botkit" bench train --device cuda --dtype bfloat16 --quick \
    --json "$OUT/train.json"

echo "== done in $((SECONDS - started))s, status $status; results in $OUT"
exit "$status"
