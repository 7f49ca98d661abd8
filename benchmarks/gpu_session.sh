#!/usr/bin/env bash
# Every GPU check and figure vitcli quotes, in one script for one short lease of a GPU machine
# without network (see docs/benchmarks.md "On a GPU").
#
# Purpose: the commands work on CUDA (train, eval, predict, export, plan on the default run) and
#          the GPU figures: bench_e2e (default run's non-step share), bench_gpu (vitcli vs the
#          bare-loop ceiling at 224 px bf16), bench_timm (vitcli vs timm's train.py, same folder).
# Cost:    about 6-8 minutes on one H200 (16 CPU cores).
# Run:     where PyPI is reachable, fill the git-ignored .whl/ (hydra-core, omegaconf, antlr4, timm
#          wheels and timm's train.py as .whl/timm_train.py):
#            bash benchmarks/gpu_wheels.sh .venv/bin/python PATH/TO/pytorch-image-models/train.py
#          then on the GPU machine, from the repository root, with .whl carried:
#            OUT=/some/dir bash benchmarks/gpu_session.sh [STEP ...]     (steps: smoke e2e gpu timm compile)
# All output goes to $OUT/session.log as well as to the terminal; a failed step does not stop
# the next one.
set -u
OUT=${OUT:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
steps=${*:-smoke e2e gpu timm compile}

# a bare GPU image: vitcli's missing dependencies from the carried wheels, vitcli itself from this tree
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_session: the wheels in .whl/ did not install"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
[ -e vitcli/conf ] || ln -s ../conf vitcli/conf  # what pyproject's package-dir does for an install
export WANDB_MODE=offline PYTHONUNBUFFERED=1 VITCLI_CACHE=/tmp/vitcli_cache
WORK=$(mktemp -d)
{ nvidia-smi -L; python3 -c "import torch, timm, hydra, sys; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'timm', timm.__version__, 'hydra', hydra.__version__, torch.cuda.get_device_name(0))"; nproc; } \
  2>&1 | tee -a "$OUT/session.log"

step() {  # step NAME TIMEOUT_S COMMAND...: run in $WORK, log to $OUT/NAME.log, report the time
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  (cd "$WORK" && PYTHONFAULTHANDLER=1 timeout -s ABRT -k 10 "$limit" "$@") 2>&1 | tee -a "$OUT/session.log"  # ABRT: stacks of a hang
  echo "=== $name: rc=${PIPESTATUS[0]} in $((SECONDS - t0)) s"
}


for s in $steps; do
  case $s in
    smoke)  # the default run on the GPU, then the commands that read it
      step train 150 python3 -m vitcli train trainer.progress=plain hydra.run.dir="$WORK/default"
      cp "$WORK/default/summary.json" "$OUT/default_summary.json" 2>/dev/null
      step eval 60 python3 -m vitcli eval run="$WORK/default" eval.tta=flip
      step predict 60 python3 -m vitcli predict run="$WORK/default" split=val
      step export 60 python3 -m vitcli export run="$WORK/default"
      step plan 120 python3 -m vitcli plan model=vit_s data=synthetic data.img_size=224 trainer.precision=bf16 ;;
    e2e) step e2e 180 python3 "$ROOT/benchmarks/bench_e2e.py" --rounds 2 ;;
    gpu) step gpu "${GPU_LIMIT:-300}" python3 "$ROOT/benchmarks/bench_gpu.py" --rows ${GPU_ROWS:-vit_small vit_base swin_tiny} ;;
    timm) step timm 240 python3 "$ROOT/benchmarks/bench_timm.py" --timm-train "$ROOT/.whl/timm_train.py" \
            --device cuda --workers 8 --bare-batches 20 ;;
    compile) step compile 200 python3 "$ROOT/benchmarks/bench_gpu.py" --rows "vit_small b256 compile" ;;
    *) echo "gpu_session: unknown step $s (smoke e2e gpu timm compile)" ;;
  esac
done
