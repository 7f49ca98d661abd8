"""Real services for the tracker tests, each started on loopback in a temp dir and stopped by the
process group it was started in (never by name): an MLflow tracking server, a PostgreSQL
server (Debian's, its own data dir and user), and headless Chromium to look at a page.
Debian packages that are missing are installed with apt-get (root), as CI starts clean.
Also: reading TensorBoard event files back (tensorboard's EventAccumulator)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

APT_LOCK = Path(tempfile.gettempdir()) / "vitcli-tests-apt.lock"  # xdist workers install one at a time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apt_install(packages: list[str]) -> str | None:
    """apt-get install `packages` (update and retry once); None when done, else why it could not."""
    if shutil.which("apt-get") is None:
        return f"needs {' '.join(packages)} and there is no apt-get to install them"
    if os.geteuid() != 0:
        return f"needs {' '.join(packages)}; installing them takes root (apt-get install {' '.join(packages)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(cmd, env=env, capture_output=True).returncode == 0:
            return None
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"apt-get install {' '.join(packages)} failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Until `url` answers 200; fails with the server's log when it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop the process group `proc` leads (started with start_new_session=True): it and its workers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


@contextlib.contextmanager
def mlflow_server(root: Path, backend_store_uri: str | None = None) -> Iterator[str]:
    """`mlflow server` on a free loopback port, its store in root/mlflow.db (or the given URI) and its
    artifacts in root/artifacts, served through the server; yields its http:// URL."""
    root.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runners (GenAI jobs)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", proc, log)
        yield url
    finally:
        stop(proc)


def chromium() -> tuple[str | None, str | None]:
    """(path to a chromium binary, None), installing Debian's chromium when missing, or (None, why not)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found, None
    why = apt_install(["chromium"])
    found = shutil.which("chromium")
    return (found, None) if found else (None, why or "apt-get installed chromium but it is not on PATH")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def browse(binary: str, url: str, *args: str, budget_ms: int = 20000, timeout: float = 180.0) -> str:
    """Load `url` in headless Chromium with a new empty profile, give its scripts `budget_ms` of
    virtual time, and return stdout (the DOM with --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *args, url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            stop(proc, signal.SIGKILL)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {err[-2000:]}")
    return out


# ---- PostgreSQL ----

def postgres_bin() -> tuple[Path | None, str | None]:
    """The folder of Debian's PostgreSQL server programs (initdb, postgres), installing it when missing."""
    def find() -> Path | None:
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
        return next((Path(d) for d in reversed(dirs) if (Path(d) / "initdb").is_file()), None)

    found = find()
    if found:
        return found, None
    why = apt_install(["postgresql"])
    found = find()
    return (found, None) if found else (None, why or "apt-get installed postgresql but no initdb was found")


def _as_user(user: str | None):
    return {} if user is None else {"user": user, "group": pwd.getpwnam(user).pw_gid}


@contextlib.contextmanager
def postgres_server(bindir: Path, databases: list[str]) -> Iterator[str]:
    """A PostgreSQL server in a new temp data dir on a free loopback port (as user `postgres` when
    this is root: the server refuses to run as root), trust auth for user vitcli; creates
    `databases` and yields postgresql://vitcli@127.0.0.1:<port>/ (append a database name)."""
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="vitcli-pg-"))
    if user:
        os.chown(root, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    data, port, log = root / "data", free_port(), root / "server.log"
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "vitcli", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, cwd=root, **_as_user(user))
    with open(log, "w") as out:
        if user:
            os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                                 "-k", str(root), "-c", "fsync=off", "-c", "max_connections=100"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, **_as_user(user))
    try:
        import psycopg  # the driver SQLAlchemy 2.1 uses for postgresql:// (optuna's and MLflow's)

        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="vitcli", dbname="postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.3)
        with conn.cursor() as cur:
            for name in databases:
                cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        yield f"postgresql://vitcli@127.0.0.1:{port}/"
    finally:
        stop(proc, signal.SIGINT)  # postgres: SIGINT is a fast shutdown
        shutil.rmtree(root, ignore_errors=True)


# ---- reading TensorBoard event files back ----

def tensorboard_events(log_dir: Path):
    """tensorboard's EventAccumulator over a run's event files, everything loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_row(log_dir: Path) -> dict:
    """The hparams plugin's session in a run's event files: {"hparams": {name: value}, "metrics": {tag: value}}."""
    from tensorboard.plugins.hparams import metadata

    events = tensorboard_events(log_dir)
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {k: (v.number_value if v.HasField("number_value") else v.string_value) for k, v in start.hparams.items()}
    metrics = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("hparams/")}
    return {"hparams": hparams, "metrics": metrics}


def same_series(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    """Equal step numbers and values equal to float32 precision (event files store float32)."""
    import math

    return [s for s, _ in actual] == [s for s, _ in expected] and all(
        math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-6) for (_, a), (_, e) in zip(actual, expected))
