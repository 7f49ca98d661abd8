"""In-process communication between DDP ranks (torch.distributed, started by torchrun or srun).

Joining the process group, wrapping the model in DDP, and sharing rank 0's run
directory. Who this process is (rank, world size) and the sum over ranks live in
core/dist.py; launching ranks lives in torchrun.py.

Where the tasks of an srun step meet when SLURM reserved no port for them (`step_store`): rank 0
serves the step's TCPStore on a port its kernel picks (free by construction), and answers on the
first of the step's candidate ports it can bind (slurm.py's `candidate_ports`: the same list on
every task, below the ephemeral range) with one line, `vitcli <token> <store port>`. The other
ranks ask the candidates in turn, with plain sockets and timeouts, and take the answer holding
their step's token: a port another program holds on rank 0's node (silent, or speaking something
else) costs a retry, not a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from vitcli.core import dist, runs
from vitcli.core.errors import UserError
from vitcli.core.runtime import rank_gpu
from vitcli.launch import interrupts
from vitcli.launch.slurm import SlurmTask, candidate_ports, restarts

log = logging.getLogger("vitcli")

PEER_FAILED = "stopped because another rank of the job failed"


class PeerFailed(UserError):
    """This rank was stopped (SIGTERM from torchrun, or a broken collective) after another one failed."""


@contextlib.contextmanager
def process_group(cuda: bool, store: Any = None) -> Iterator[None]:
    """Join the job's process group (NCCL on GPUs, gloo on CPU) when started by torchrun or srun.

    Args:
        cuda: one GPU per rank (core/runtime.py's `rank_gpu` says which).
        store: where the ranks meet (`step_store`, an srun step); None: torchrun's
            MASTER_ADDR / MASTER_PORT.
    """
    if dist.world_size() == 1:
        yield
        return

    if cuda:
        torch.cuda.set_device(rank_gpu(torch.cuda.device_count()))
    backend = "nccl" if cuda else "gloo"
    if store is None:
        torch_dist.init_process_group(backend=backend)
    else:
        torch_dist.init_process_group(backend=backend, store=store, rank=dist.rank(), world_size=dist.world_size())
    global _control
    # stop votes: a few bytes on the CPU, apart from NCCL's streams and DDP's buckets (interrupts.StopVote)
    _control = torch_dist.new_group(backend="gloo")
    if dist.rank() != 0:
        log.setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if interrupts.leaving() else previous)
        _control = None
        torch_dist.destroy_process_group()


_control: Any = None


def control_group() -> Any:
    """The gloo process group for small CPU-side agreements between ranks (None alone)."""
    return _control


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise PeerFailed(PEER_FAILED)


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run dir on every rank (direct torchrun: each rank resolved its own timestamp)."""
    if not dist.initialized():
        return run_dir

    box = [str(run_dir)]
    torch_dist.broadcast_object_list(box, src=0)
    shared = Path(box[0])
    if shared.resolve() != run_dir.resolve() and run_dir.is_dir():
        leftovers = {p.name for p in run_dir.iterdir()}
        if leftovers <= {runs.HYDRA, runs.TRAIN_LOG}:  # only what Hydra made for this rank
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def wrap_model(model: Any, device: Any, sync_batchnorm: bool = False, find_unused: bool = False) -> Any:
    """DDP around the model (its own state dict keys stay unwrapped); SyncBatchNorm when asked.

    Args:
        find_unused: parameters may get no gradient in a step (frozen-backbone epochs).
    """
    if dist.world_size() == 1 or not dist.initialized():
        return model

    if sync_batchnorm:
        if device.type == "cpu":
            raise UserError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on CPU); "
                            "drop it for trainer.device=cpu")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers inside, same parameters
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)


def barrier() -> None:
    """Wait until every rank is here (on the gloo group: no device work involved)."""
    torch_dist.barrier(group=_control)


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj` (small, picklable), in rank order, on rank 0; None on the others."""
    box = [None] * dist.world_size() if dist.rank() == 0 else None
    torch_dist.gather_object(obj, box, dst=0, group=_control)
    return box


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a small picklable value, e.g. a stop decision)."""
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def min_over_ranks(value: int) -> int:
    """The smallest of every rank's `value` (on the gloo group)."""
    t = torch.tensor([value], dtype=torch.int64)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MIN, group=_control)
    return int(t.item())


def max_over_ranks(value: int) -> int:
    """The largest of every rank's `value` (on the gloo group)."""
    return -min_over_ranks(-value)


# ---- an srun step's meeting point ------------------------------------------------------------
GREETING = "vitcli"


def step_token(task: SlurmTask, env: Mapping[str, str] = os.environ) -> str:
    """What rank 0 answers with: this job, step and requeue, and nothing else."""
    return f"{task.job_id}.{task.step_id}.{restarts(env)}"


@contextlib.contextmanager
def step_store(task: SlurmTask, timeout: timedelta = timedelta(minutes=15), probe_s: float = 5.0,
               env: Mapping[str, str] = os.environ) -> Iterator[Any]:
    """The TCPStore every task of the step shares, rank 0 serving it (and its answer, while the
    block lasts); MASTER_PORT is set to the candidate port the step met on.

    Args:
        timeout: how long the other ranks look for rank 0 in all (it may start late on a busy node),
            and the store's own timeout.
        probe_s: how long a rank waits for an answer at one candidate port before trying the next.
    """
    ports, token = candidate_ports(env), step_token(task, env)
    if task.rank != 0:
        port, store_port = _find(task, ports, token, timeout, probe_s)
        os.environ["MASTER_PORT"] = str(port)
        yield torch_dist.TCPStore(task.master_addr, store_port, task.world_size, is_master=False, timeout=timeout)
        return
    store = torch_dist.TCPStore(task.master_addr, 0, task.world_size, is_master=True, timeout=timeout,
                                wait_for_workers=False)
    beacon = _bind_first_free(task, ports)
    os.environ["MASTER_PORT"] = str(beacon.getsockname()[1])
    answer = f"{GREETING} {token} {store.port}\n".encode()
    threading.Thread(target=_answer, args=(beacon, answer), name="vitcli-rendezvous", daemon=True).start()
    try:
        yield store
    finally:
        beacon.close()


def _bind_first_free(task: SlurmTask, ports: list[int]) -> socket.socket:
    busy = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("", port))
            sock.listen(64)
        except OSError as err:  # another program (or another step's rank 0) holds it
            sock.close()
            busy.append(f"{port} ({err.strerror})")
            continue
        if busy:
            log.info(f"ports in use on {task.master_addr}: {', '.join(busy)}; the step meets on port {port}")
        return sock
    raise UserError(f"rank 0 of SLURM step {task.job_id}.{task.step_id} could bind none of ports "
                    f"{', '.join(map(str, ports))} on {task.master_addr} ({'; '.join(busy)}): run the step with "
                    "`srun --resv-ports` (MpiParams=ports=... in slurm.conf), or set VITCLI_MASTER_PORT to a free "
                    "port in the batch script")


def _answer(beacon: socket.socket, answer: bytes) -> None:
    while True:
        try:
            conn, _ = beacon.accept()
        except OSError:  # closed: the step has met
            return
        with conn:
            try:
                conn.sendall(answer)
            except OSError:
                pass


def _find(task: SlurmTask, ports: list[int], token: str, timeout: timedelta, probe_s: float) -> tuple[int, int]:
    """(the candidate port rank 0 answered on, its store's port)."""
    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        for port in ports:
            words = _ask(task.master_addr, port, probe_s).split()
            if len(words) == 3 and words[:2] == [GREETING, token] and words[2].isdigit():
                return port, int(words[2])
        time.sleep(1.0)  # rank 0 is not listening yet
    raise UserError(f"rank {task.rank} of SLURM step {task.job_id}.{task.step_id} found rank 0 on none of ports "
                    f"{', '.join(map(str, ports))} of {task.master_addr} within {timeout.total_seconds():.0f} s; "
                    "see rank 0's error in the job's log")


def _ask(host: str, port: int, timeout_s: float) -> str:
    """The first line a listener on host:port sends, or '' (nobody there, silence, a reset)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            data = b""
            while not data.endswith(b"\n") and len(data) < 256:
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.decode("ascii", errors="replace")
    except OSError:
        return ""
