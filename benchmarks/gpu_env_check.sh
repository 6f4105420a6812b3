#!/usr/bin/env bash
# The GPU machine's package set, reproduced on any Linux machine: a venv OUTSIDE the repository with exactly what the
# lent GPU machine has (torch 2.11 + the matching torchvision, numpy, pillow, tensorboard, timm, tqdm and their
# dependencies; no pandas, matplotlib, seaborn, scipy, papermill), then `gpu_check.sh --dry-run` in it with this
# clone on PYTHONPATH, as a reviewer would run it. Not part of `make test`: the torch wheel is several GB.
#
#   bash benchmarks/gpu_env_check.sh [OUT_DIR]            # build (or reuse) the venv, then the full dry run
#   bash benchmarks/gpu_env_check.sh --install-only       # only build the venv (start it early: it downloads GBs)
#   GPU_ENV_VENV=/path bash benchmarks/gpu_env_check.sh   # where the venv lives (default ~/.cache/cps_repro/gpu_env)
#   STAGES=preflight,e2e bash benchmarks/gpu_env_check.sh # a selection of gpu_check stages
# OUT_DIR (default: a temporary folder) receives gpu_check's summary, archive and env.txt (pip freeze, python).
# Exit status: the dry run's; 4 when a package the GPU machine lacks is in the venv.
set -eu
INSTALL_ONLY=0
if [ "${1:-}" = "--install-only" ]; then INSTALL_ONLY=1; shift; fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
VENV=${GPU_ENV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cps_repro/gpu_env}
case "$VENV/" in "$REPO"/*) echo "gpu_env_check.sh: the venv must live outside the repository ($VENV)" >&2; exit 2;; esac
# the GPU machine's set: one home for it (the preflight stage of gpu_check checks the same names)
PKGS=("torch==2.11.*" "torchvision==0.26.*" numpy pillow tensorboard timm tqdm)
ABSENT=(pandas matplotlib seaborn scipy papermill)
BASE=${BASE_PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[gpu_env_check] creating $VENV with $($BASE --version 2>&1)"
  mkdir -p "$(dirname "$VENV")"
  "$BASE" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, torchvision, numpy, PIL, tensorboard, timm, tqdm; assert torch.__version__.startswith("2.11")' 2>/dev/null; then
  echo "[gpu_env_check] installing ${PKGS[*]} (several GB: torch and its CUDA libraries)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${PKGS[@]}"
fi
present=$("$VENV/bin/python" - "${ABSENT[@]}" <<'PY'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None))
PY
)
if [ -n "$present" ]; then echo "gpu_env_check.sh: $VENV has $present, which the GPU machine lacks: remove the venv and rerun" >&2; exit 4; fi
[ $INSTALL_ONLY = 1 ] && { echo "[gpu_env_check] venv ready: $VENV"; exit 0; }

OUT_DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_env_check.XXXXXX")}
mkdir -p "$OUT_DIR"
{ echo "python: $("$VENV/bin/python" --version 2>&1)"; echo "venv: $VENV"; "$VENV/bin/python" -m pip freeze; } > "$OUT_DIR/env.txt"
echo "[gpu_env_check] $(grep -E '^(torch|torchvision)==' "$OUT_DIR/env.txt" | tr '\n' ' ')-> gpu_check.sh --dry-run into $OUT_DIR"
set +e
# the repository's own .venv is NOT used: PYTHON points at the venv, the clone is found through PYTHONPATH
(cd /tmp && PYTHON="$VENV/bin/python" PYTHONPATH="$REPO" bash "$REPO/benchmarks/gpu_check.sh" --dry-run \
   ${STAGES:+--stages "$STAGES"} "$OUT_DIR")
rc=$?
echo "[gpu_env_check] gpu_check.sh --dry-run exit $rc; results in $OUT_DIR"
exit $rc
