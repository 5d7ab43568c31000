#!/bin/bash
# Second run: every query allowed to finish (self:timeout=300), and a W = 4 arm; run under the engine lock.
set -u
cd /work/wt/query-window
export PYTHONPATH=$PWD/src
PY=/work/main/.venv/bin/python
lw() { $PY -c 'from lengthwise.cli import app; app()' "$@"; }
echo "lock taken $(date -u +%T)"
[ $(date +%s) -lt $(date -u -d "17:50" +%s) ] || { echo "too late to measure"; exit 0; }
VLLM_CPU_OMP_THREADS_BIND=1 lw engine up --port 8200 --kv-cache 48M --max-model-len 2048 --max-num-seqs 4 || { lw engine down --port 8200; exit 1; }
echo "engine up $(date -u +%T)"
nice -n 19 taskset -c 0 timeout 540 $PY benchmarks/gateway_prefix_cache.py --engine-url http://127.0.0.1:8200 \
  --requests 20 --max-inflight 2 --max-tokens 8 --predictor self:timeout=300 --windows 0,2,4 --rounds 2 --budget 300 \
  --out docs/results/eviction/window-rule
echo "bench done $(date -u +%T)"
lw engine down --port 8200
echo "engine down $(date -u +%T)"
