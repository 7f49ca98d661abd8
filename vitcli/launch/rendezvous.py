"""Where the tasks of an srun step meet when SLURM reserved no port for them.

Rank 0 serves the step's torch.distributed TCPStore on a port its kernel picks (free by
construction), and answers on the first of the step's candidate ports it can bind
(launch/slurm.py's `candidate_ports`: the same list on every task, below the ephemeral range)
with one line: `vitcli <token> <store port>`. The other ranks ask the candidates in turn, with
plain sockets and timeouts, and take the answer that holds their step's token; a port another
program holds on rank 0's node (silent, or speaking something else) costs a retry, not a hang.
The process group is then built on that store (`init_process_group(store=...)`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any, Iterator, Mapping

import torch.distributed as torch_dist

from vitcli.core.errors import UserError
from vitcli.launch.slurm import SlurmTask, candidate_ports, restarts

log = logging.getLogger("vitcli")

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
