"""A real one-node SLURM cluster (slurmctld + slurmd + munged, all under a temp dir) for the
`slurm` tests: tests/slurm/cluster.sh installs and starts it; the session stops it again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

CLUSTER = Path(__file__).with_name("cluster.sh")
CANNOT_START = 4  # cluster.sh: not root, or nothing to install SLURM with


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[str]:
    """SLURM_CONF of a running one-node cluster (set in os.environ for the whole session, so
    sbatch, squeue and every job the tests submit use it); skipped where none can be started."""
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster needs root (slurmd launches jobs; munged runs as user munge)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    was_up = subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0
    up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode == CANNOT_START:
        pytest.skip(f"no SLURM cluster: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"tests/slurm/cluster.sh up failed:\n{up.stderr}"
    conf = re.search(r"SLURM_CONF=(\S+)", up.stdout).group(1)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        if not was_up:  # a cluster someone started by hand stays up
            subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=120)
