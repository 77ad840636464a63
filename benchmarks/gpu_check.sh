#!/usr/bin/env bash
# GPU checks on a machine with only torch / transformers / numpy (no Postgres, Redis, Celery or Flask there).
#
#   benchmarks/gpu_check.sh [--smoke] [SECTION...]      sections: generation, small_jobs (default: all)
#
# generation: GPT-2 124M shape, random weights, bf16 on CUDA, 1024 prompts, the mixed and the uniform workloads:
# tokens/s of the continuous and static engines and the naive batch-1 loop (timed on 64 prompts), ratios, and
# the fraction of the H200's KV-bandwidth roof (4.8 TB/s / (mean live context x 36 KiB per token)).
# small_jobs: cross-job batching in the engine alone: 1,000 one-prompt jobs arriving at random times join the running
# batch (GPT-2 124M shape, 16 new tokens each), tokens/s against one 1,000-prompt job (benchmarks/engine_small_jobs.py).
# --smoke: a tiny model on the CPU, a few prompts: checks the script itself on a machine without a GPU.
# Every step runs under `timeout`, and the whole script stays under 8 minutes on an H200; it starts no servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

smoke=0
sections=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    generation|small_jobs) sections+=("$arg") ;;
    *) echo "unknown argument: $arg (sections: generation, small_jobs; flag: --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#sections[@]} -eq 0 ] && sections=(generation small_jobs)

children=()
cleanup() { for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

run() {  # run LIMIT_SECONDS CMD...: one step, bounded, its output prefixed with the step's name
  local limit=$1; shift
  echo "+ $*"
  timeout --kill-after=10 "$limit" "$@" &
  children+=($!)
  wait $! || { rc=$?; echo "step failed or timed out (rc $rc): $*"; return 0; }
}

generation() {
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
"cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  if [ $smoke -eq 1 ]; then
    common=(--size tiny --device cpu --prompts 16 --naive yes --naive-prompts 4 --roof)
    run 300 "$PY" -m benchmarks.generation --workload mixed "${common[@]}"
    run 300 "$PY" -m benchmarks.generation --workload uniform "${common[@]}"
  else
    common=(--size gpt2-124m --device cuda --prompts 1024 --naive yes --naive-prompts 64 --roof)
    run 200 "$PY" -m benchmarks.generation --workload mixed "${common[@]}"
    run 200 "$PY" -m benchmarks.generation --workload uniform "${common[@]}"
  fi
}

small_jobs() {
  if [ $smoke -eq 1 ]; then
    run 300 "$PY" -m benchmarks.engine_small_jobs --size tiny --device cpu --jobs 40 --tokens 8
  elif "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    run 150 "$PY" -m benchmarks.engine_small_jobs --size gpt2-124m --device cuda --jobs 1000 --tokens 16
  else
    echo "GPU not measured: no device"
  fi
}

start=$(date +%s)
for section in "${sections[@]}"; do
  echo "== $section"
  "$section"
done
echo "== done in $(( $(date +%s) - start )) s"
