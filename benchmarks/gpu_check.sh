#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/README.md and BENCHMARKS.md). On one H100 / H200, in under 8 minutes, with
# nothing but what the package installs (torch, torchvision, pillow, numpy, tqdm; no download, no network):
#   1. step     the paper-scale training step (ResNet-101 DeepLabv3+, 512 crop, 8+8(+8) images on one GPU, synthetic
#               tensors) of supervised / CPS / CPS+CutMix, interleaved: fp32 eager, bf16 (the library's amp=auto),
#               bf16 + channels_last, + cudnn benchmark, + the lean step; CPS and CutMix overheads; estimated peak
#               memory of each alone
#   2. audit    host-device synchronisations inside one step (torch.cuda sync debug mode + a torch-function probe)
#   3. memory   peak memory of fp32 CPS+CutMix 8+8+8 alone in a fresh process (does the paper's batch fit 80 GB?)
#   4. data     VOC train transform on generated 500x375 JPEGs: per worker and through the loader with 8 workers
#   5. eval     sliding-window evaluation, Cityscapes protocol (1024x2048, 800 window), bf16 + channels_last
#   6. mini     300 iterations of the mini preset end to end on the GPU (fp32 as the preset says, and bf16 + cl)
#   7. compile  CPS+CutMix step: fp32 eager (TF32 convolutions, PyTorch's default) and strict fp32 vs bf16 + cl
#               vs bf16 + cl + torch.compile (takes the time left)
# then summarize.py writes summary.md / summary.json (figures vs targets) into the output folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # on the GPU machine (default OUT_DIR: $OUT, else benchmarks/results/...)
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # on CPU at the smallest sizes: the same scripts and code paths
#   --pack: leave only summary.md, summary.json, stages.log and gpu_check.tar.gz (every JSON and log) in OUT_DIR
#           (automatic when OUT_DIR is the device tool's $OUT, which returns at most 8 files)
# Environment: PYTHON (default: ./.venv/bin/python if present, else python3), BUDGET_S (whole run, default 465 s).
set -u
DRY=0; PACK=0
while [ $# -gt 0 ]; do
  case "$1" in --dry-run) DRY=1; shift;; --pack) PACK=1; shift;; *) break;; esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
FINAL=${1:-${OUT:-$REPO/benchmarks/results/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}}
# writing into the device tool's $OUT (at most 8 files come back): work elsewhere, hand back summary + one archive
if [ -n "${OUT:-}" ] && [ "$FINAL" = "$OUT" ]; then PACK=1; fi
mkdir -p "$FINAL"
if [ $PACK = 1 ]; then OUT_DIR=$(mktemp -d); else OUT_DIR=$FINAL; fi
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
BUDGET=${BUDGET_S:-465}
START=$(date +%s)
: > "$OUT_DIR/stages.log"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# stage NAME LIMIT_S CMD...: run CMD with a time limit (capped by the budget left), log to OUT_DIR/NAME.log
stage() {
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  if [ "$limit" -gt "$((l - 10))" ]; then limit=$((l - 10)); fi
  if [ "$limit" -lt 20 ]; then echo "$name skipped: ${l}s of the budget left" | tee -a "$OUT_DIR/stages.log"; return; fi
  echo "[gpu_check] $(date -u +%H:%M:%S) $name (limit ${limit}s)"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))$([ $rc = 124 ] && echo ' (time limit)')" | tee -a "$OUT_DIR/stages.log"
  tail -n 30 "$OUT_DIR/$name.log"
}

B="$HERE"
if [ $DRY = 1 ]; then
  DEV=cpu
  STEP=(--tiny --variants fp32,bf16+cl,bf16+cl+lean)
  AUDIT=(--tiny --variants fp32,fp32+lean)
  MEM=(--tiny)
  DATA=(--tiny --pin-if-cuda)
  EVAL=(--tiny --precision bf16 --channels-last)
  MINI=(--tiny --variants fp32,bf16+cl)
  COMP=(--tiny --variants fp32,fp32+cl,fp32+cl+compile)
else
  DEV=cuda
  P=(--backbone resnet101 --crop 512 --batch 8)
  STEP=("${P[@]}" --variants fp32,bf16,bf16+cl,bf16+cl+cudnn,bf16+cl+cudnn+lean --steps 8 --warmup 2 --deadline 100)
  AUDIT=(--backbone small_resnet --crop 128 --batch 4 --variants bf16+cl,bf16+cl+lean)
  MEM=("${P[@]}")
  DATA=(--n-images 64 --gen-processes 8 --workers 1,8 --seconds 6 --pin-if-cuda)
  EVAL=(--backbone resnet101 --image 1024x2048 --crop 800 --precision bf16 --channels-last --images 4)
  MINI=(--iters 300 --variants fp32,bf16+cl)
  COMP=("${P[@]}" --variants fp32,fp32+strict,bf16+cl+cudnn,bf16+cl+cudnn+compile --steps 6 --warmup 2)
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  dry_run: $DRY  python: $PY  repo: $REPO  git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  "$PY" -c "import torch, torchvision, PIL, numpy, tqdm, cps_repro; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'torchvision', torchvision.__version__, 'cps_repro', cps_repro.__version__, 'from', cps_repro.__file__)"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
if [ $DRY = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[gpu_check] CUDA is not available to $PY: nothing to measure (use --dry-run on a CPU machine)"; exit 2
fi

stage step    150 "$PY" "$B/bench_step.py" --device $DEV "${STEP[@]}" --json "$OUT_DIR/step.json"
stage audit    45 "$PY" "$B/audit_syncs.py" --device $DEV "${AUDIT[@]}" --json "$OUT_DIR/audit.json"
stage memory   45 "$PY" "$B/bench_step.py" --device $DEV "${MEM[@]}" --memory-only --variants fp32 --methods cps_cutmix --json "$OUT_DIR/memory_fp32_cps_cutmix.json"
stage data     45 "$PY" "$B/bench_data.py" "${DATA[@]}" --json "$OUT_DIR/data.json"
stage eval     30 "$PY" "$B/bench_eval.py" --device $DEV "${EVAL[@]}" --json "$OUT_DIR/eval.json"
stage mini     60 "$PY" "$B/mini_e2e.py" --device $DEV "${MINI[@]}" --json "$OUT_DIR/mini.json"
stage compile 400 "$PY" "$B/bench_step.py" --device $DEV "${COMP[@]}" --methods cps_cutmix --no-refs --json "$OUT_DIR/step_compile.json"
"$PY" "$B/summarize.py" "$OUT_DIR" > "$OUT_DIR/summary.log" 2>&1 || echo "summarize failed: see $OUT_DIR/summary.log"
if [ $PACK = 1 ]; then
  tar czf "$FINAL/gpu_check.tar.gz" -C "$OUT_DIR" . && cp "$OUT_DIR/summary.md" "$OUT_DIR/summary.json" "$OUT_DIR/stages.log" "$FINAL/" 2>/dev/null
  rm -rf "$OUT_DIR"
fi
echo "[gpu_check] done in $(( $(date +%s) - START )) s; results in $FINAL"
tail -n 45 "$FINAL/summary.md" 2>/dev/null
