"""benchmarks/bench_gpu.py --smoke runs its real code path on CPU, so the GPU benchmark cannot rot."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_smoke_prints_one_table():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "ceiling img/s" in lines[header] and "syncs/step" in lines[header]
    row = lines[header + 2].split()
    assert row[0] == "vit_pico" and row[1] == "b8"
    ceiling, packed, packed_ratio, files, files_ratio = map(float, row[2:7])
    assert min(ceiling, packed, files) > 0
    # the printed ratios are the printed throughputs' (rounded to 0.1 img/s and 0.01)
    assert math.isclose(packed_ratio, packed / ceiling, rel_tol=0.05, abs_tol=0.01)
    assert math.isclose(files_ratio, files / ceiling, rel_tol=0.05, abs_tol=0.01)
    assert re.search(r"num_workers\(auto\)=\d+", lines[0])
