#!/bin/bash
# The query-window rule on the embedded engine under KV pressure; run under the engine lock.
set -u
cd /work/wt/query-window
export PYTHONPATH=$PWD/src
PY=/work/main/.venv/bin/python
lw() { $PY -c 'from lengthwise.cli import app; app()' "$@"; }
echo "lock taken $(date -u +%T)"
# The report is due at 18:15 UTC: nothing starts after 18:02, and the bench ends by 18:11.
[ $(date +%s) -lt $(date -u -d "18:02" +%s) ] || { echo "too late to measure"; exit 0; }
VLLM_CPU_OMP_THREADS_BIND=1 lw engine up --port 8200 --kv-cache 48M --max-model-len 2048 --max-num-seqs 4 || { lw engine down --port 8200; exit 1; }
echo "engine up $(date -u +%T)"
curl -s http://127.0.0.1:8200/metrics | grep -o 'num_gpu_blocks="[0-9]*"\|block_size="[0-9]*"' | sort -u
LENGTHWISE_ENGINE_URL=http://127.0.0.1:8200 LENGTHWISE_ENGINE_MAX_NUM_SEQS=4 nice -n 19 taskset -c 0 timeout 300 \
  /work/main/.venv/bin/pytest tests/integration/test_gateway.py -q -p no:cacheprovider -k "query_window or shares_the_prefix"
echo "integration done $(date -u +%T)"
B=$(( $(date -u -d "18:11" +%s) - $(date +%s) - 200 )); [ $B -gt 570 ] && B=570; [ $B -lt 150 ] && B=150
echo "bench budget ${B}s"
nice -n 19 taskset -c 0 timeout $(( B + 200 )) $PY benchmarks/gateway_prefix_cache.py --engine-url http://127.0.0.1:8200 \
  --requests 20 --max-inflight 2 --max-tokens 8 --windows 0,2 --rounds 3 --budget $B --out docs/results/eviction/window-rule
echo "bench done $(date -u +%T)"
lw engine down --port 8200
echo "engine down $(date -u +%T)"
