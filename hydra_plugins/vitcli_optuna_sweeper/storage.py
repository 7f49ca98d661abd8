"""Where a study lives, and the record in the sweep dir that lets jobs and tools find it.

hydra.sweeper.storage takes a SQLAlchemy URL (`sqlite:///runs/x/optuna.db`, `postgresql://...`)
or a journal file path (anything without "://", e.g. `runs/x/optuna.log`): optuna's
JournalFileBackend appends one line per event under a file lock, so processes on several
nodes can share it over NFS, where sqlite is unsafe. null: a journal file in the sweep dir.

`<sweep dir>/optuna_study.yaml` holds the study's name, absolute storage and pruner; jobs
read it to report to their trial, and `study_of_sweep(dir)` reopens the study later.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._errors import SweeperConfigError

RECORD = "optuna_study.yaml"
DEFAULT_JOURNAL = "optuna_journal.log"
SQLITE = "sqlite:///"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass
class StudyRecord:
    study_name: str
    storage: str  # absolute: a SQLAlchemy URL or a journal file path
    directions: list[str]
    pruner: dict[str, Any] = field(default_factory=dict)  # instantiate-able: jobs build the same pruner

    def write(self, sweep_dir: Path) -> None:
        from omegaconf import OmegaConf

        sweep_dir.mkdir(parents=True, exist_ok=True)
        tmp = sweep_dir / f".{RECORD}.{os.getpid()}"
        OmegaConf.save(OmegaConf.create(asdict(self)), tmp)
        os.replace(tmp, sweep_dir / RECORD)  # workers sharing a sweep dir never read half a file

    @classmethod
    def read(cls, sweep_dir: Path) -> "StudyRecord | None":
        from omegaconf import OmegaConf

        path = Path(sweep_dir) / RECORD
        if not path.is_file():
            return None
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(data, dict)
        return cls(**data)  # type: ignore[arg-type]


def resolve_storage(spec: str | None, sweep_dir: Path) -> str:
    """The storage as an absolute URL or path; null: a journal file in the sweep dir.
    Checks that it can be written, creating its folder (sqlite cannot)."""
    if spec is None or str(spec).strip() == "":
        spec = str(Path(sweep_dir).absolute() / DEFAULT_JOURNAL)
    spec = str(spec)
    where = f"hydra.sweeper.storage={spec}"
    if "://" in spec:
        if not spec.startswith(SQLITE):
            return spec  # a database server: optuna reports what is wrong with it
        path = spec[len(SQLITE):]
        if path in ("", ":memory:"):
            raise SweeperConfigError(f"{where}: an in-memory sqlite database cannot be shared with the "
                                     "jobs; give a file: sqlite:///runs/NAME/optuna.db")
        path = Path(path).absolute()
        _check_writable(path, where)
        return SQLITE + str(path)
    path = Path(spec).expanduser()
    if path.suffix in SQLITE_SUFFIXES:
        raise SweeperConfigError(f"{where}: a plain path is a journal file; for a sqlite database "
                                 f"write sqlite:///{spec} (or name the journal file {path.with_suffix('.log')})")
    path = path.absolute()
    _check_writable(path, where)
    return str(path)


def _check_writable(path: Path, where: str) -> None:
    if path.is_dir():
        raise SweeperConfigError(f"{where}: {path} is a folder; give a file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise SweeperConfigError(f"{where}: cannot write {path} ({reason}); choose a writable path") from err


def open_storage(storage: str) -> Any:
    """An optuna storage for a resolved spec (see resolve_storage)."""
    import optuna

    if "://" in storage:
        kwargs = {"connect_args": {"timeout": 60}} if storage.startswith(SQLITE) else None
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
        except Exception as err:  # a bad URL, a missing driver, an unreachable server
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweeperConfigError(f"hydra.sweeper.storage={storage}: {text}") from err
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(storage))


def study_of_sweep(sweep_dir: Path, storage: Any = None) -> Any:
    """The optuna study a sweep dir's record points at, or None (not an optuna sweep)."""
    import optuna

    record = StudyRecord.read(Path(sweep_dir))
    if record is None:
        return None
    return optuna.load_study(study_name=record.study_name, storage=storage or open_storage(record.storage))
