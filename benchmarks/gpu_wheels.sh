#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what a bare GPU image without network lacks for
# benchmarks/gpu_session.sh: hydra-core, omegaconf and the antlr4 runtime at this checkout's
# versions, and timm at this checkout's version (bench_timm runs timm's train.py against it).
#   bash benchmarks/gpu_wheels.sh [PYTHON] [PATH/TO/pytorch-image-models/train.py]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-.venv/bin/python}}
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "timm")))
PYEOF
)
mkdir -p .whl
# antlr4-python3-runtime 4.9.x ships only an sdist: build it into a wheel here (pure Python).
"$PY" -m pip wheel -q --no-deps --wheel-dir .whl $pins
[ -n "${2:-}" ] && cp "$2" .whl/timm_train.py
echo "in .whl/: $(ls .whl | tr '\n' ' ')"
echo "on the GPU machine, carry .whl and run:  OUT=DIR bash benchmarks/gpu_session.sh"
