"""glibc's allocator keeps the step's freed buffers (vitcli/core/malloc_tuning.py): fewer page faults
per step, set for `vitcli train`, and left alone where the user chose an allocator or its settings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="mallopt thresholds are glibc's",
)

# A small MLP's training step (one torch thread): activations and gradients of 0.5-4 MB, allocated
# and freed every step. Prints the minor page faults of 20 steps after 5 of warm-up. Transparent huge
# pages are off for the process (prctl PR_SET_THP_DISABLE): a huge page is one fault for 2 MB, and how
# many the kernel has to hand varies with the machine's load (a busy CI run counted 4,288 faults untuned
# where a quiet one counts ~20,000; without huge pages ~30,000).
STEPS = textwrap.dedent("""
    import ctypes, resource, sys
    ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)
    import torch
    from vitcli.core import malloc_tuning
    tuned = malloc_tuning.tune() if sys.argv[1] == "tune" else False
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024),
                                torch.nn.GELU(), torch.nn.Linear(1024, 10))
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))
    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(5):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def faults(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    proc = subprocess.run([sys.executable, "-c", STEPS, mode], env={**clean, "OMP_NUM_THREADS": "1", **env},
                          capture_output=True, text=True, check=True)
    tuned, count = proc.stdout.split()
    return tuned == "True", int(count)


@glibc_only
def test_tuned_steps_reuse_their_memory_instead_of_faulting_it_in_again():
    plain_tuned, plain = faults("plain")
    tuned, kept = faults("tune")
    assert tuned and not plain_tuned
    # untuned, glibc hands the freed buffers back and faults them in again (600-1,800 faults a step)
    assert plain > 20 * 300, plain
    assert kept < plain / 4, (kept, plain)  # tuned: ~50 a step; untuned 600-1,800 a step, by the load


@glibc_only
@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
                                 {"VITCLI_MALLOC_TUNING": "0"}])
def test_the_users_own_allocator_settings_are_left_alone(env):
    tuned, count = faults("tune", **env)
    assert not tuned and count > 20 * 300  # nothing set: glibc trims as it does by default


@glibc_only
def test_a_training_run_records_that_its_allocator_was_tuned(tiny_run, read_summary):
    assert read_summary(tiny_run)["malloc_tuned"] is True
