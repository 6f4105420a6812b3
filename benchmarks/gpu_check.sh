#!/usr/bin/env bash
# The prepared GPU check: one call of at most 10 minutes on one H100 / H200, <= 480 s of its own, nothing installed,
# nothing downloaded, with the machine's own python3 (torch, torchvision, numpy, Pillow, tqdm, TensorBoard, timm: no
# pandas, matplotlib or seaborn are needed). Stages run most valuable figures first; every stage has its own deadline,
# writes its JSON after each measured case (so a stage killed midway leaves what it measured) and is re-packed into
# OUT_DIR when it ends; however the script ends, the last pack stays there.
#
#   0. commit     commit.txt: git commit (or "no git") + sha256 of the source tree, written before anything runs
#   1. preflight  python, compiler, Python.h, triton, free disk (toolchain.py); imports cps_repro.cli; one tiny CUDA
#                 Trainer.step(). Deadline 60 s; stops the check only on a real error (no CUDA, an import failure)
#      (background, CPU only: count_flops.py -> flops.json, estimate_memory.py -> estimate.json, synthetic data)
#   2. step       paper-scale step (ResNet-101 DeepLabv3+, 512 crop, 8+8(+8)), interleaved: fp32 without TF32,
#                 bf16 + channels_last, + cudnn.benchmark; CPS / CutMix overheads, img/s, peak memory
#   3. eval       sliding-window evaluation (Cityscapes protocol), bf16 + channels_last, several windows per forward
#   4. e2e        synthetic VOC-layout data at 500 px; `torchrun --standalone --nproc_per_node=1 -m cps_repro.cli
#                 train --preset voc_cps_cutmix_resnet101` with loader workers, bf16, channels_last, compile OFF:
#                 killed after its checkpoint at iteration 20, resumed to 30, evaluated; finite losses, result.json
#   5. data       the training loader with 1 and 8 workers (uint8 batches, pinned memory)
#   6. compile    last, with the rest of the budget (>= 150 s): bf16 + channels_last + cudnn + torch.compile, CPS+CutMix;
#                 its JSON is written after every warm-up step (the first one compiles). Skipped, with the reason,
#                 without a C/C++ compiler, Python.h or (CUDA) triton. Caches (inductor, triton) in the work folder.
# then summarize.py: summary.md / summary.json (MFU against counted FLOPs, img/s, peak memory, eval img/s).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]              # on the GPU machine (default OUT_DIR: $OUT)
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]    # the same stages on CPU at the smallest sizes (< 10 min)
#   bash benchmarks/gpu_check.sh --dry-run --stages preflight,step OUT_DIR    # a selection of stages
#   bash benchmarks/gpu_check.sh --list-stages           # the stage names, one per line, in the order they run
# OUT_DIR receives summary.md, summary.json, stages.log, commit.txt and gpu_check.tar.gz (every JSON and log, no
# checkpoint, no checkpoint temporary file, no cache; at most 50 MB, else JSON, Markdown and text only); without
# OUT_DIR and $OUT a temporary folder is used (printed). Environment: PYTHON (default ./.venv/bin/python if present,
# else python3), BUDGET_S (whole run, default 470, dry run 600; the script never runs past it), COMPILE_MIN_S (the
# seconds kept for the compile stage, default 150; dry run 60).
set -u
STAGES_ALL="preflight step eval e2e data compile"
DRY=0; SEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift;;
    --stages) SEL=$(echo "$2" | tr ',' ' '); shift 2;;
    --list-stages) for s in $STAGES_ALL; do echo "$s"; done; exit 0;;
    -h|--help) sed -n '2,32p' "$0"; exit 0;;
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
# compiler caches inside the work folder: nothing written outside it, nothing left behind
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor_cache" TRITON_CACHE_DIR="$WORK/triton_cache"
BUDGET=${BUDGET_S:-$([ $DRY = 1 ] && echo 600 || echo 470)}   # the dry run: 2 loaded CPU cores
COMPILE_MIN=${COMPILE_MIN_S:-$([ $DRY = 1 ] && echo 60 || echo 150)}
PACK_S=12                                                       # kept for the last re-pack
ARCHIVE_MAX_MB=${ARCHIVE_MAX_MB:-50}                           # the archive that comes back: at most this
START=$(date +%s)
B="$HERE"
: > "$WORK/stages.log"
BG_PIDS=""; CUR_PID=""
SETSID=$(command -v setsid || true)                             # each stage in a session of its own: killed as a whole

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }

# pack: summary + one archive into FINAL, atomically (a later kill leaves the previous complete pack); bounded in time
# and size: checkpoints, their temporary files and the caches stay out; above ARCHIVE_MAX_MB only JSON/Markdown/text
pack() {
  timeout 20 "$PY" "$B/summarize.py" "$WORK" > "$WORK/summary.log" 2>&1 || echo "summarize failed: see summary.log" >> "$WORK/stages.log"
  for f in summary.md summary.json stages.log commit.txt; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$FINAL/.$f.tmp" && mv "$FINAL/.$f.tmp" "$FINAL/$f"; done
  local t="$FINAL/.gpu_check.tar.gz.tmp"
  timeout 30 tar czf "$t" --exclude=inductor_cache --exclude=triton_cache --exclude=synth --exclude='*.pt' \
      --exclude='*.pt.tmp*' --exclude='*.tmp[0-9]*' -C "$WORK" . 2>/dev/null
  if [ ! -s "$t" ] || [ "$(stat -c %s "$t" 2>/dev/null || echo 0)" -gt $(( ARCHIVE_MAX_MB * 1024 * 1024 )) ]; then
    echo "archive over ${ARCHIVE_MAX_MB} MB (or failed): JSON, Markdown and text files only" >> "$WORK/stages.log"
    (cd "$WORK" && find . -type f \( -name '*.json' -o -name '*.md' -o -name '*.txt' -o -name 'stages.log' \) -size -5M \
       -not -path './synth/*' -not -path './*cache/*' -print0 | timeout 20 tar czf "$t" --null -T -) 2>/dev/null
  fi
  [ -s "$t" ] && mv "$t" "$FINAL/gpu_check.tar.gz"
  rm -f "$t"
}
finish() {
  local rc=$?
  trap - EXIT INT TERM
  for p in $CUR_PID $BG_PIDS; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null; done
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

# stage NAME LIMIT_S CMD...: run CMD in its own process group with a deadline, capped by the budget left less RESERVE
# (the compile stage's minimum while it is still to come) and the last pack; log to NAME.log, record rc and seconds,
# re-pack. A stage that is not given 10 s is skipped and says so.
RESERVE=0
stage() {
  local name=$1 limit=$2; shift 2
  local l; l=$(( $(left) - RESERVE - PACK_S ))
  if [ "$limit" -gt "$l" ]; then limit=$l; fi
  if [ "$limit" -lt 10 ]; then echo "$name skipped: $(left) s of the budget left" | tee -a "$WORK/stages.log"; pack; return 0; fi
  echo "[gpu_check] $(date -u +%H:%M:%S) $name (deadline ${limit} s)"
  local t0; t0=$(date +%s)
  $SETSID timeout --kill-after=5 "$limit" "$@" > "$WORK/$name.log" 2>&1 &
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
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  dry_run: $DRY  stages: $SEL  python: $PY  budget: ${BUDGET}s  compile min: ${COMPILE_MIN}s"
} > "$WORK/commit.txt" 2>&1
cat "$WORK/commit.txt"

if [ $DRY = 1 ]; then
  DEV=cpu
  STEP=(--tiny --variants fp32+strict,bf16+cl,bf16+cl+cudnn --methods cps_cutmix --steps 2 --warmup 1)
  COMP=(--tiny --variants fp32+cl+compile --methods supervised --no-refs --steps 1 --warmup 1)   # CPU: the lightest compile
  EVAL=(--tiny --precision bf16 --channels-last --window-batch 4)
  DATA=(--tiny --pin-if-cuda)
  FLOPS=(--tiny); EST=(--tiny --methods cps_cutmix --precisions bf16)
  SYN=(--n 16 --n-val 2 --size 64)
  # the preset's own backbone (model.backbone builds a preset and is refused as an override), at the smallest sizes
  E2E=(crop_size=64 eval.crop_size=64 batch_size=2 workers=1 amp=none channels_last=true compile=false)   # bf16 eager on CPU: slow
  E2E_ITERS=(2 3)
  declare -A LIM=([preflight]=60 [step]=60 [eval]=40 [e2e]=240 [data]=40)
else
  DEV=cuda
  P=(--backbone resnet101 --crop 512 --batch 8)
  STEP=("${P[@]}" --variants fp32+strict,bf16+cl,bf16+cl+cudnn --methods cps,cps_cutmix --steps 6 --warmup 2 --deadline 55)
  COMP=("${P[@]}" --variants bf16+cl+cudnn+compile --methods cps_cutmix --no-refs --steps 6 --warmup 2)
  EVAL=(--backbone resnet101 --image 1024x2048 --crop 800 --precision bf16 --channels-last --window-batch 1,4 --images 4)
  DATA=(--n-images 64 --gen-processes 8 --workers 1,8 --seconds 5 --items 20 --pin-if-cuda)
  FLOPS=(--backbones resnet50,resnet101 --crop 512 --batch 8); EST=(--accum 1,2 --precisions fp32,bf16)
  SYN=(--n 48 --n-val 8 --size 500)
  E2E=(batch_size=8 workers=6 amp=bf16 channels_last=true compile=false)
  E2E_ITERS=(20 30)
  declare -A LIM=([preflight]=60 [step]=80 [eval]=35 [e2e]=110 [data]=30)
fi
want compile && RESERVE=$COMPILE_MIN

# ---- 1. preflight: stops the check on a real error only (not on its own deadline)
PRE='
import importlib.util, json, os, sys, time, tempfile, traceback
t0 = time.time(); dev_name, bench, path, work = sys.argv[1:5]
out = {"ok": False, "finished": False, "now": "toolchain"}
def save(now=None):
    out["now"], out["seconds"] = now, round(time.time() - t0, 1)
    json.dump(out, open(path + ".tmp", "w"), indent=1); os.replace(path + ".tmp", path)
sys.path.insert(0, bench)
try:
    from toolchain import toolchain
    out.update(toolchain(dev_name, work)); save("imports")
    out["missing"] = [m for m in ("torch", "torchvision", "numpy", "PIL", "tqdm", "tensorboard", "timm") if importlib.util.find_spec(m) is None]
    import torch, torchvision, cps_repro, cps_repro.cli
    out["versions"] = (f"torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
                       f"torchvision {torchvision.__version__}, cps_repro {cps_repro.__version__} from {cps_repro.__file__}")
    out["imported_cps_repro_cli"] = True
    dev = torch.device(dev_name)
    if dev.type == "cuda":
        if not torch.cuda.is_available(): raise RuntimeError("no CUDA device visible to torch")
        p = torch.cuda.get_device_properties(dev); out["gpu"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm {p.major}.{p.minor}"
    save("tiny Trainer.step()")
    from common import bench_config, synthetic_data
    from cps_repro.train import Trainer
    cfg = bench_config("cps_cutmix", "small_resnet", 32, 2, 2, amp="bf16" if dev.type == "cuda" else "none", channels_last=True)
    tr = Trainer(cfg, run_dir=tempfile.mkdtemp(), device=str(dev), progress=False, data=synthetic_data(2, 2, 32, 21, dev.type == "cuda"))
    loss = float(tr.step()["total"])
    out.update(ok=loss == loss, loss=round(loss, 4))
    if not out["ok"]: out["error"] = "the tiny step gave a NaN loss"
except BaseException as e:
    out["error"] = f"{type(e).__name__}: {e}"[:500]; traceback.print_exc()
out["finished"] = True; save(None)
print(json.dumps(out)); sys.exit(0 if out["ok"] else 1)
'
if want preflight; then
  if [ $DRY = 0 ] && command -v nvidia-smi > /dev/null; then
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$WORK/nvidia-smi.txt" 2>&1
  fi
  stage preflight "${LIM[preflight]}" "$PY" -c "$PRE" $DEV "$B" "$WORK/preflight.json" "$WORK"; rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    echo "preflight ran past its deadline: the check goes on (see preflight.json for how far it got)" | tee -a "$WORK/stages.log"
  elif [ $rc != 0 ]; then
    echo "[gpu_check] preflight found an error: nothing else is run (see preflight.log)"; exit 3
  fi
fi

# CPU-only work in the background while the GPU stages run: FLOP count, memory estimate, synthetic data
if want step || want compile; then
  ( exec $SETSID timeout 200 "$PY" "$B/count_flops.py" "${FLOPS[@]}" --json "$WORK/flops.json" > "$WORK/flops.log" 2>&1 ) & BG_PIDS="$BG_PIDS $!"
  ( exec $SETSID timeout 300 "$PY" "$B/estimate_memory.py" "${EST[@]}" --json "$WORK/estimate.json" > "$WORK/estimate.log" 2>&1 ) & BG_PIDS="$BG_PIDS $!"
fi
if want e2e; then
  ( exec $SETSID timeout 200 "$PY" -m cps_repro.cli synth "$WORK/synth" --layout voc --seed 0 "${SYN[@]}" > "$WORK/synth.log" 2>&1 ) & SYNTH_PID=$!
  BG_PIDS="$BG_PIDS $SYNTH_PID"
fi

# ---- 2. step variants (eager)
want step && stage step "${LIM[step]}" "$PY" "$B/bench_step.py" --device $DEV "${STEP[@]}" --json "$WORK/step.json"

# ---- 3. evaluation
want eval && stage eval "${LIM[eval]}" "$PY" "$B/bench_eval.py" --device $DEV "${EVAL[@]}" --json "$WORK/eval.json"

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
# e2e.json after each part (a kill leaves the last one): part 1, then part 2, then the verdict
report() { "$PY" - "$RUN" "$WORK" "$N1" "$N2" "$@" <<PYEOF
import json, math, os, sys
from pathlib import Path
run, work, n1, n2, phase, t0, t1, t2, rc = (sys.argv[1:] + [None] * 9)[:9]
run, work = Path(run), Path(work)
out = {"command": (work / "e2e_command.txt").read_text().strip(), "finished": phase == "final",
       "now": {"part1": f"part 1: training to the checkpoint at iteration {n1}", "part2": f"part 2: resuming to {n2} and evaluating"}.get(phase)}
if t1: out["seconds_to_checkpoint"] = round(float(t1) - float(t0), 1)
if t2: out.update(seconds_resume_and_eval=round(float(t2) - float(t1), 1), rc_resume=int(rc))
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] if (run / "metrics.jsonl").exists() else []
losses = [r["loss/total"] for r in rows if "loss/total" in r]
out["logged_losses"] = len(losses); out["losses_finite"] = bool(losses) and all(math.isfinite(x) for x in losses)
p2 = work / "e2e_part2.log"
out["resumed_from"] = next((l.split("iteration")[-1].strip() for l in p2.read_text().splitlines() if "Resuming" in l), None) if p2.exists() else None
res = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else None
out["result_json"] = res is not None
if res: out.update(iters=res["iters"], miou=res["miou"], device=res["device"], git_commit=res.get("git_commit"))
out["ok"] = bool(res) and out["losses_finite"] and res["iters"] == int(n2) and out["resumed_from"] is not None
tmp = work / ".e2e.json.tmp"; tmp.write_text(json.dumps(out, indent=1)); os.replace(tmp, work / "e2e.json")
if phase == "final": print(json.dumps(out, indent=1))
sys.exit(0 if out["ok"] or phase != "final" else 1)
PYEOF
}
t0=$(date +%s)
report part1 "$t0"
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
[ -f "$RUN/checkpoint.pt" ] || { echo "no checkpoint written (see e2e_part1.log)"; tail -n 20 "$WORK/e2e_part1.log"; report part1 "$t0" "$t1"; exit 1; }
report part2 "$t0" "$t1"
"${CMD[@]}" > "$WORK/e2e_part2.log" 2>&1 & pid=$!
wait $pid; rc=$?; pid=""
t2=$(date +%s)
echo "part 1 (to the checkpoint) $((t1 - t0)) s, part 2 (resume to $N2, evaluate) $((t2 - t1)) s, rc $rc"
report final "$t0" "$t1" "$t2" "$rc"
'
if want e2e; then
  wait "$SYNTH_PID"; tail -n 3 "$WORK/synth.log"
  stage e2e "${LIM[e2e]}" bash -c "$E2E_SCRIPT" e2e "$WORK" "$PY" "${E2E_ITERS[0]}" "${E2E_ITERS[1]}" "${E2E[@]}"
fi

# ---- 5. the loader
want data && stage data "${LIM[data]}" "$PY" "$B/bench_data.py" "${DATA[@]}" --json "$WORK/data.json"

# ---- 6. the one compiled variant, last, with what is left of the budget (at least COMPILE_MIN seconds)
if want compile; then
  RESERVE=0
  if [ ! -f "$WORK/preflight.json" ]; then timeout 30 "$PY" "$B/toolchain.py" $DEV "$WORK" > "$WORK/toolchain.json" 2> /dev/null; fi
  why=$("$PY" -c 'import json, sys
for f in sys.argv[1:]:
    try: t = json.load(open(f))
    except (OSError, ValueError): continue
    if "compile_ok" in t: print("" if t["compile_ok"] else t["compile_skip_reason"]); break
else: print("the toolchain could not be checked (no preflight.json or toolchain.json)")' "$WORK/preflight.json" "$WORK/toolchain.json")
  if [ -n "$why" ]; then
    echo "compile skipped: $why" | tee -a "$WORK/stages.log"
    "$PY" -c 'import json, sys; json.dump({"kind": "bench_step", "skipped": sys.argv[2]}, open(sys.argv[1], "w"))' "$WORK/step_compile.json" "$why"
    pack
  else
    CL=$(( $(left) - PACK_S ))
    stage compile "$CL" "$PY" "$B/bench_step.py" --device $DEV "${COMP[@]}" --deadline $(( CL > 40 ? CL - 30 : 10 )) --json "$WORK/step_compile.json"
  fi
fi

# the background work, if still running, gets what is left of the budget
for p in $BG_PIDS; do
  while kill -0 "$p" 2>/dev/null && [ "$(left)" -gt "$PACK_S" ]; do sleep 1; done
done
exit 0
