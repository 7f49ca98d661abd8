#!/usr/bin/env bash
# Fetch the wheels a bare GPU image lacks (hydra-core, omegaconf, antlr4 runtime), at the versions
# of this checkout's environment, into .gpu_wheels/ (git-ignored), then say how to run bench_gpu.py
# on a machine without network:   bash benchmarks/gpu_wheels.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-.venv/bin/python}}
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("hydra-core", "omegaconf", "antlr4-python3-runtime")))
PYEOF
)
mkdir -p .gpu_wheels
# antlr4-python3-runtime 4.9.x ships only an sdist: build it into a wheel here (pure Python).
"$PY" -m pip wheel --no-deps --wheel-dir .gpu_wheels $pins
echo "wheels in .gpu_wheels/: $(ls .gpu_wheels | tr '\n' ' ')"
cat <<MSG
On the GPU machine (carry .gpu_wheels; bench_gpu.py imports vitcli from this checkout), from the repository root:
  pip install --no-index --find-links .gpu_wheels $pins && python benchmarks/bench_gpu.py
MSG
