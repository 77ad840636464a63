#!/usr/bin/env bash
# GPU checks on a machine with only torch / transformers / numpy (no Postgres, Redis, Celery or Flask there).
#
#   benchmarks/gpu_check.sh [--smoke] [SECTION...]      sections: generation, small_jobs, tagger, training (default: all)
#
# generation: GPT-2 124M shape, random weights, bf16 on CUDA, 1024 prompts, the mixed and the uniform workloads:
# tokens/s of the continuous and static engines and the naive batch-1 loop (timed on 64 prompts), ratios, and
# the fraction of the H200's KV-bandwidth roof (4.8 TB/s / (mean live context x 36 KiB per token)).
# small_jobs: cross-job batching in the engine alone: 1,000 one-prompt jobs arriving at random times join the running
# batch (GPT-2 124M shape, 16 new tokens each), tokens/s against one 1,000-prompt job (benchmarks/engine_small_jobs.py).
# tagger: BERT-base shape (12 x 768), random weights, bf16 autocast for both loops: tokens/s of the seed 002 loop
# (every sentence padded to max_length 128, DataLoader, AdamW) and of the text.train_tagger loop, batch 32, 60 steps.
# training: GPT-2 124M shape, bf16, seq 1024: genqueue's text.train loop vs the Hugging Face Trainer with its best
# flags (both torch.compile'd, warm-up printed), tokens/s and MFU; DCGAN 64x64 images/s vs the reference loop, bf16
# and fp32 (benchmarks/gpu_train_check.py).
# --smoke: a tiny model on the CPU, a few prompts: checks the script itself on a machine without a GPU.
# Every step runs under `timeout`; on a GPU the limits add up to 460 s, so the whole script ends within 8 minutes
# (a step cut short prints "step failed or timed out" and the rest go on); it starts no servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

smoke=0
sections=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    generation|small_jobs|tagger|training) sections+=("$arg") ;;
    *) echo "unknown argument: $arg (sections: generation, small_jobs, tagger, training; flag: --smoke)" >&2; exit 2 ;;
  esac
done
[ ${#sections[@]} -eq 0 ] && sections=(generation small_jobs tagger training)

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
    run 80 "$PY" -m benchmarks.generation --workload mixed "${common[@]}"
    run 80 "$PY" -m benchmarks.generation --workload uniform "${common[@]}"
  fi
}

small_jobs() {
  if [ $smoke -eq 1 ]; then
    run 300 "$PY" -m benchmarks.engine_small_jobs --size tiny --device cpu --jobs 40 --tokens 8
  elif "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    run 60 "$PY" -m benchmarks.engine_small_jobs --size gpt2-124m --device cuda --jobs 1000 --tokens 16
  else
    echo "GPU not measured: no device"
  fi
}

tagger() {
  if [ $smoke -eq 1 ]; then
    run 300 "$PY" -m benchmarks.train_tagger --size tiny --device cpu --steps 8 --warmup 2 --sentences 200 \
      --precision bf16 --seed-bf16
  else
    run 60 "$PY" -m benchmarks.train_tagger --size base --device cuda --steps 60 --warmup 5 --batch-size 32 \
      --max-length 128 --sentences 4000 --vocab-size 8000 --precision bf16 --seed-bf16
  fi
}

training() {
  if [ $smoke -eq 1 ]; then
    run 300 "$PY" -m benchmarks.gpu_train_check --smoke
  else
    run 180 "$PY" -m benchmarks.gpu_train_check
  fi
}

start=$(date +%s)
for section in "${sections[@]}"; do
  echo "== $section"
  "$section"
done
echo "== done in $(( $(date +%s) - start )) s"
