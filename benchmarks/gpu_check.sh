#!/usr/bin/env bash
# The prepared GPU check: one call of at most 10 minutes on one H100 / H200, <= 480 s of its own, nothing installed,
# nothing downloaded. Every stage has its own deadline and still reports what it timed; after every stage (and on
# exit, however the script ends) the results are re-packed into OUT_DIR, so a run killed midway returns the stages
# it finished.
#
#   0. commit     commit.txt: git commit (or "no git") + sha256 of the source tree, written before anything runs
#   1. preflight  imports, versions, one tiny CUDA Trainer.step(); fails the whole check within 15 s
#      (background, CPU only: count_flops.py -> flops.json, estimate_memory.py -> estimate.json, synthetic data)
#   2. step       paper-scale step (ResNet-101 DeepLabv3+, 512 crop, 8+8(+8)), interleaved: fp32 without TF32,
#                 bf16 + channels_last, + cudnn.benchmark; CPS / CutMix overheads, img/s, peak memory
#   3. compile    the one compiled variant (bf16 + channels_last + cudnn + torch.compile), CPS+CutMix, own deadline
#   4. e2e        synthetic VOC-layout data at 500 px; `torchrun --standalone --nproc_per_node=1 -m cps_repro.cli
#                 train --preset voc_cps_cutmix_resnet101` with loader workers, bf16, channels_last, compile: killed
#                 after its checkpoint at iteration 20, resumed to 30, evaluated; finite losses, result.json
#   5. eval       sliding-window evaluation (Cityscapes protocol), bf16 + channels_last, several windows per forward
#   6. data       the training loader with 1 and 8 workers (uint8 batches, pinned memory)
# then summarize.py: summary.md / summary.json (MFU against counted FLOPs, img/s, peak memory, eval img/s).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]              # on the GPU machine (default OUT_DIR: $OUT)
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]    # the same stages on CPU at the smallest sizes (< 10 min)
#   bash benchmarks/gpu_check.sh --dry-run --stages preflight,step OUT_DIR    # a selection of stages
#   bash benchmarks/gpu_check.sh --list-stages           # the stage names, one per line
# OUT_DIR receives summary.md, summary.json, stages.log, commit.txt and gpu_check.tar.gz (every JSON and log);
# without OUT_DIR and $OUT a temporary folder is used (printed). Environment: PYTHON (default ./.venv/bin/python if
# present, else python3), BUDGET_S (whole run, default 465).
set -u
STAGES_ALL="preflight step compile e2e eval data"
DRY=0; SEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift;;
    --stages) SEL=$(echo "$2" | tr ',' ' '); shift 2;;
    --list-stages) for s in $STAGES_ALL; do echo "$s"; done; exit 0;;
    -h|--help) sed -n '2,28p' "$0"; exit 0;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2;;
    *) break;;
  esac
done
SEL=${SEL:-$STAGES_ALL}
for s in $SEL; do case " $STAGES_ALL " in *" $s "*) ;; *) echo "gpu_check.sh: unknown stage $s; stages: $STAGES_ALL" >&2; exit 2;; esac; done
want() { case " $SEL " in *" $1 "*) return 0;; esac; return 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
FINAL=${1:-${OUT:-}}
if [ -z "$FINAL" ]; then FINAL=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX"); fi
mkdir -p "$FINAL"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX")     # everything is written here, packed into FINAL
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor_cache"           # the e2e stage reuses the compile stage's kernels
BUDGET=${BUDGET_S:-$([ $DRY = 1 ] && echo 540 || echo 465)}
START=$(date +%s)
B="$HERE"
: > "$WORK/stages.log"
BG_PIDS=""; CUR_PID=""

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }

# pack: summary + one archive into FINAL, atomically (a later kill leaves the previous complete pack)
pack() {
  "$PY" "$B/summarize.py" "$WORK" > "$WORK/summary.log" 2>&1 || echo "summarize failed: see summary.log" >> "$WORK/stages.log"
  for f in summary.md summary.json stages.log commit.txt; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$FINAL/.$f.tmp" && mv "$FINAL/.$f.tmp" "$FINAL/$f"; done
  tar czf "$FINAL/.gpu_check.tar.gz.tmp" --exclude=inductor_cache --exclude=synth --exclude='*.pt' -C "$WORK" . 2>/dev/null \
    && mv "$FINAL/.gpu_check.tar.gz.tmp" "$FINAL/gpu_check.tar.gz"
}
finish() {
  local rc=$?
  trap - EXIT INT TERM
  for p in $CUR_PID $BG_PIDS; do kill "$p" 2>/dev/null; done
  echo "exit rc=$rc after $(elapsed) s" >> "$WORK/stages.log"
  pack
  echo "[gpu_check] done in $(elapsed) s; results in $FINAL"
  tail -n 60 "$FINAL/summary.md" 2>/dev/null
  rm -rf "$WORK"
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stage NAME LIMIT_S CMD...: run CMD in its own process group with a deadline (capped by the budget left, keeping
# RESERVE seconds for what follows), log to NAME.log, record rc and seconds, re-pack
RESERVE=0
stage() {
  local name=$1 limit=$2; shift 2
  local l; l=$(( $(left) - RESERVE ))
  if [ "$limit" -gt "$l" ]; then limit=$l; fi
  if [ "$limit" -lt 10 ]; then echo "$name skipped: $(left) s of the budget left" | tee -a "$WORK/stages.log"; pack; return 0; fi
  echo "[gpu_check] $(date -u +%H:%M:%S) $name (deadline ${limit} s)"
  local t0; t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" > "$WORK/$name.log" 2>&1 &
  CUR_PID=$!
  wait $CUR_PID                                # interruptible: a TERM to this script packs and exits at once
  local rc=$?; CUR_PID=""
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))$({ [ $rc = 124 ] || [ $rc = 137 ]; } && echo ' (deadline)')" | tee -a "$WORK/stages.log"
  tail -n 15 "$WORK/$name.log"
  pack
  return $rc
}

# ---- 0. the commit, before anything runs
{
  echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo 'no git (a copy of the working tree)')"
  st=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | head -n 20); [ -n "$st" ] && echo "uncommitted changes:" && echo "$st"
  echo "source sha256: $(cd "$REPO" && find cps_repro benchmarks -name '*.py' -o -name '*.sh' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  dry_run: $DRY  stages: $SEL  python: $PY  budget: ${BUDGET}s"
} > "$WORK/commit.txt" 2>&1
cat "$WORK/commit.txt"

if [ $DRY = 1 ]; then
  DEV=cpu
  STEP=(--tiny --variants fp32+strict,bf16+cl,bf16+cl+cudnn --methods cps_cutmix --steps 2 --warmup 1)
  COMP=(--tiny --variants fp32+cl+compile --methods cps_cutmix --no-refs --steps 1 --warmup 1)
  EVAL=(--tiny --precision bf16 --channels-last --window-batch 4)
  DATA=(--tiny --pin-if-cuda)
  FLOPS=(--tiny); EST=(--tiny --methods cps_cutmix --precisions bf16)
  SYN=(--n 16 --n-val 2 --size 64)
  # the preset's own backbone (model.backbone builds a preset and is refused as an override), at the smallest sizes
  E2E=(crop_size=64 eval.crop_size=64 batch_size=2
       workers=1 amp=bf16 channels_last=true compile=false)
  E2E_ITERS=(4 8); LIM=(30 60 120 200 40 60)
else
  DEV=cuda
  P=(--backbone resnet101 --crop 512 --batch 8)
  STEP=("${P[@]}" --variants fp32+strict,bf16+cl,bf16+cl+cudnn --methods cps,cps_cutmix --steps 6 --warmup 2 --deadline 60)
  COMP=("${P[@]}" --variants bf16+cl+cudnn+compile --methods cps_cutmix --no-refs --steps 6 --warmup 2 --deadline 80)
  EVAL=(--backbone resnet101 --image 1024x2048 --crop 800 --precision bf16 --channels-last --window-batch 1,4 --images 4)
  DATA=(--n-images 64 --gen-processes 8 --workers 1,8 --seconds 5 --items 20 --pin-if-cuda)
  FLOPS=(--backbones resnet50,resnet101 --crop 512 --batch 8); EST=(--accum 1,2 --precisions fp32,bf16)
  SYN=(--n 48 --n-val 8 --size 500)
  E2E=(batch_size=8 workers=6 amp=bf16 channels_last=true compile=true)
  E2E_ITERS=(20 30); LIM=(15 90 110 170 35 35)
fi

# ---- 1. preflight: fails the check within 15 s
PRE='
import importlib.util, json, sys, time, tempfile
t0 = time.time(); out = {"ok": False}
try:
    missing = [m for m in ("torch", "torchvision", "numpy", "PIL", "tqdm", "tensorboard", "pandas", "matplotlib", "seaborn")
               if importlib.util.find_spec(m) is None]
    out["missing"] = missing
    import torch, torchvision, cps_repro
    dev = torch.device(sys.argv[1])
    out["versions"] = (f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
                       f"torchvision {torchvision.__version__}, cps_repro {cps_repro.__version__} from {cps_repro.__file__}")
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev); out["gpu"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm {p.major}.{p.minor}"
    sys.path.insert(0, sys.argv[2])
    from common import bench_config, synthetic_data
    from cps_repro.train import Trainer
    cfg = bench_config("cps_cutmix", "small_resnet", 32, 2, 2, amp="bf16" if dev.type == "cuda" else "none", channels_last=True)
    tr = Trainer(cfg, run_dir=tempfile.mkdtemp(), device=str(dev), progress=False, data=synthetic_data(2, 2, 32, 21, dev.type == "cuda"))
    loss = float(tr.step()["total"])
    out.update(ok=loss == loss, loss=round(loss, 4))
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"[:500]
out["seconds"] = round(time.time() - t0, 1)
json.dump(out, open(sys.argv[3], "w"), indent=1); print(json.dumps(out))
sys.exit(0 if out["ok"] else 1)
'
if want preflight; then
  if [ $DRY = 0 ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$WORK/nvidia-smi.txt" 2>&1
  fi
  if ! stage preflight "${LIM[0]}" "$PY" -c "$PRE" $DEV "$B" "$WORK/preflight.json"; then
    echo "[gpu_check] preflight failed: nothing else is run (see preflight.log)"; exit 3
  fi
fi

# CPU-only work in the background while the GPU stages run: FLOP count, memory estimate, synthetic data
if want step || want compile; then
  ( timeout 200 "$PY" "$B/count_flops.py" "${FLOPS[@]}" --json "$WORK/flops.json" > "$WORK/flops.log" 2>&1 ) & BG_PIDS="$BG_PIDS $!"
  ( timeout 300 "$PY" "$B/estimate_memory.py" "${EST[@]}" --json "$WORK/estimate.json" > "$WORK/estimate.log" 2>&1 ) & BG_PIDS="$BG_PIDS $!"
fi
if want e2e; then
  ( timeout 200 "$PY" -m cps_repro.cli synth "$WORK/synth" --layout voc --seed 0 "${SYN[@]}" > "$WORK/synth.log" 2>&1 ) & SYNTH_PID=$!
  BG_PIDS="$BG_PIDS $SYNTH_PID"
fi

# ---- 2. step variants (eager); 3. the one compiled variant
RESERVE=0
if want e2e; then RESERVE=$(( ${LIM[3]} + 10 )); fi
want step && stage step "${LIM[1]}" "$PY" "$B/bench_step.py" --device $DEV "${STEP[@]}" --json "$WORK/step.json"
want compile && stage compile "${LIM[2]}" "$PY" "$B/bench_step.py" --device $DEV "${COMP[@]}" --json "$WORK/step_compile.json"

# ---- 4. end to end under torchrun: train to the checkpoint at E2E_ITERS[0], kill, resume to E2E_ITERS[1], evaluate
E2E_SCRIPT='
set -u
WORK=$1; PY=$2; N1=$3; N2=$4; shift 4
set -m                                         # the first run gets its own process group, killed as a whole
pid=""; stop() { [ -n "$pid" ] && { kill -KILL $(pgrep -P $pid 2>/dev/null) 2>/dev/null; kill -KILL -- -$pid 2>/dev/null; }; }
trap '"'"'stop; exit 143'"'"' TERM INT
RUN="$WORK/e2e_run"; CMD=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m cps_repro.cli train
  --preset voc_cps_cutmix_resnet101 --data-root "$WORK/synth" --run-dir "$RUN" --no-progress
  --set pretrained=none iters=$N2 checkpoint_every=$N1 eval_every=100000 log_every=1 "$@")
echo "${CMD[*]}" > "$WORK/e2e_command.txt"
t0=$(date +%s)
"${CMD[@]}" > "$WORK/e2e_part1.log" 2>&1 & pid=$!
while kill -0 $pid 2>/dev/null && [ ! -f "$RUN/checkpoint.pt" ]; do sleep 0.05; done
# torchrun starts its worker in a session of its own: freeze and kill the worker first (by its parent pid), at once,
# so that the run cannot reach its end; then torchrun
W=$(pgrep -P $pid 2>/dev/null || ps -o pid= --ppid $pid 2>/dev/null)
[ -n "$W" ] && kill -STOP $W 2>/dev/null
t1=$(date +%s)
[ -n "$W" ] && kill -KILL $W 2>/dev/null
kill -TERM -- -$pid 2>/dev/null; sleep 1; kill -KILL -- -$pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
[ -f "$RUN/result.json" ] && echo "part 1 finished before it was stopped: no resume to test (see e2e_part1.log)"
[ -f "$RUN/checkpoint.pt" ] || { echo "no checkpoint written (see e2e_part1.log)"; tail -n 20 "$WORK/e2e_part1.log"; exit 1; }
"${CMD[@]}" > "$WORK/e2e_part2.log" 2>&1 & pid=$!
wait $pid; rc=$?; pid=""
t2=$(date +%s)
echo "part 1 (to the checkpoint) $((t1 - t0)) s, part 2 (resume to $N2, evaluate) $((t2 - t1)) s, rc $rc"
"$PY" - "$RUN" "$WORK" "$N1" "$N2" "$t0" "$t1" "$t2" "$rc" <<PYEOF
import json, math, sys
from pathlib import Path
run, work, n1, n2, t0, t1, t2, rc = sys.argv[1:]
run, work = Path(run), Path(work)
out = {"command": (work / "e2e_command.txt").read_text().strip(), "rc_resume": int(rc),
       "seconds_to_checkpoint": round(float(t1) - float(t0), 1), "seconds_resume_and_eval": round(float(t2) - float(t1), 1)}
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] if (run / "metrics.jsonl").exists() else []
losses = [r["loss/total"] for r in rows if "loss/total" in r]
out["logged_losses"] = len(losses); out["losses_finite"] = bool(losses) and all(math.isfinite(x) for x in losses)
out["resumed_from"] = next((l.split("iteration")[-1].strip() for l in (work / "e2e_part2.log").read_text().splitlines() if "Resuming" in l), None)
res = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else None
out["result_json"] = res is not None
if res: out.update(iters=res["iters"], miou=res["miou"], device=res["device"], git_commit=res.get("git_commit"))
out["ok"] = bool(res) and out["losses_finite"] and res["iters"] == int(n2) and out["resumed_from"] is not None
json.dump(out, open(work / "e2e.json", "w"), indent=1); print(json.dumps(out, indent=1)); sys.exit(0 if out["ok"] else 1)
PYEOF
'
if want e2e; then
  RESERVE=0
  wait "$SYNTH_PID"; tail -n 3 "$WORK/synth.log"
  stage e2e "${LIM[3]}" bash -c "$E2E_SCRIPT" e2e "$WORK" "$PY" "${E2E_ITERS[0]}" "${E2E_ITERS[1]}" "${E2E[@]}"
fi

# ---- 5. evaluation; 6. the loader
want eval && stage eval "${LIM[4]}" "$PY" "$B/bench_eval.py" --device $DEV "${EVAL[@]}" --json "$WORK/eval.json"
want data && stage data "${LIM[5]}" "$PY" "$B/bench_data.py" "${DATA[@]}" --json "$WORK/data.json"

# the background work, if still running, gets what is left of the budget
for p in $BG_PIDS; do
  while kill -0 "$p" 2>/dev/null && [ "$(left)" -gt 5 ]; do sleep 1; done
done
exit 0
