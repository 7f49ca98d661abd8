"""MLflow plumbing shared by the training run, the sweep's parent run and the commands that add to
a run: where the tracking store is, the record a run dir keeps of its MLflow run, the config as
params within MLflow's limits, and uploading files as artifacts."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from vitcli.core import runs
from vitcli.core.io import read_json, write_json

TRUNCATED = "...[truncated]"  # the end of a param or tag value cut to MLflow's length limit
FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"  # MLflow 3 refuses its file store unless this is set
DATABASES = ("sqlite:", "postgresql", "mysql", "mssql")
# MLflow 3's UI opens an experiment in its model-training view (runs, charts) rather than the GenAI one
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(cfg: Any) -> str:
    """logger.mlflow.tracking_uri made absolute, so jobs, evals and resumes started from another
    folder reach the same store; null: sqlite:///<runs_root>/mlruns/mlflow.db."""
    uri = cfg.logger.mlflow.get("tracking_uri")
    if not uri:
        uri = f"sqlite:///{Path(cfg.runs_root) / runs.MLRUNS / 'mlflow.db'}"
    uri = str(uri)
    if uri.startswith("sqlite:///") and uri[len("sqlite:///"):] not in ("", ":memory:"):
        path = Path(uri[len("sqlite:///"):]).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        return f"sqlite:///{path}"
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):  # the file store: asked for
        os.environ.setdefault(FILE_STORE, "true")
        path = Path(re.sub(r"^file:(//)?", "", uri)).expanduser().absolute()
        return path.as_uri()
    return uri


def artifact_location(cfg: Any, uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: logger.mlflow.artifact_location, else for a
    database store <runs_root>/mlruns/artifacts; a tracking server chooses its own (None)."""
    given = cfg.logger.mlflow.get("artifact_location")
    if given:
        return str(given) if "://" in str(given) else Path(str(given)).expanduser().absolute().as_uri()
    if uri.startswith(DATABASES):
        return (Path(cfg.runs_root) / runs.MLRUNS / "artifacts").absolute().as_uri()
    return None


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlc: Any, name: str, location: str | None) -> str:
    """The experiment's id, created when missing (by whichever parallel job gets there first)."""
    from mlflow.exceptions import MlflowException

    exp = mlc.get_experiment_by_name(name)
    if exp is None:
        try:
            return mlc.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException:  # created meanwhile by another job of the sweep
            exp = mlc.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        mlc.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def experiment_name(cfg: Any) -> str:
    return str(cfg.logger.mlflow.get("experiment") or cfg.name)


def read_record(path: Path) -> dict[str, Any] | None:
    """A run dir's (or sweep dir's) record of its MLflow run: tracking_uri, experiment_id, run_id."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if record.get("run_id") and record.get("tracking_uri") else None


def write_record(path: Path, uri: str, exp_id: str, run_id: str) -> None:
    write_json(path, {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run_id})


def _limits() -> tuple[int, int, int]:
    try:
        from mlflow.utils import validation as v

        return v.MAX_ENTITY_KEY_LENGTH, v.MAX_PARAM_VAL_LENGTH, v.MAX_TAG_VAL_LENGTH
    except (ImportError, AttributeError):
        return 250, 6000, 8000


def clip(text: Any, limit: int) -> str:
    """`text` within `limit` characters, ending with the truncation marker when it was cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def safe_key(key: str) -> str:
    """A param / metric / tag name MLflow accepts: its characters, and within its length limit."""
    key = re.sub(r"[^/\w.\- :]", "_", str(key)).strip("/") or "_"
    return clip(key, _limits()[0])


def tag_value(value: Any) -> str:
    return clip(value, _limits()[2])


def param_value(value: Any) -> str:
    return clip(value, _limits()[1])


def flat_params(cfg: Any) -> dict[str, str]:
    """The resolved config flattened to dotted keys (model.name, optimizer.lr, ...), every value a
    string within MLflow's length limit."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[safe_key(prefix)] = param_value(node)

    walk("", container)
    return out


def log_params(mlc: Any, run_id: str, params: dict[str, str]) -> dict[str, str]:
    """Log the params the run does not hold yet; returns those it holds with another value (a
    resumed run's changed settings: MLflow never changes a logged param)."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

    held = mlc.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in held]
    for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
        mlc.log_batch(run_id, params=new[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    return {k: v for k, v in params.items() if k in held and held[k] != v}


def log_metrics(mlc: Any, run_id: str, metrics: dict[str, Any], step: int) -> None:
    """Finite numbers of `metrics` at `step`, in one request."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(safe_key(k), float(v), now, int(step)) for k, v in metrics.items() if v is not None]
    if batch:
        mlc.log_batch(run_id, metrics=batch)


def set_tags(mlc: Any, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    batch = [RunTag(safe_key(k), tag_value(v)) for k, v in tags.items() if v is not None]
    if batch:
        mlc.log_batch(run_id, tags=batch)


def upload(mlc: Any, run_id: str, files: list[Path], base: Path, prefix: str | None = None) -> None:
    """Each file as an artifact at its path relative to `base` (plots/curves.png stays
    plots/curves.png), under `prefix` when given."""
    for path in files:
        path = Path(path)
        if not path.is_file():
            continue
        try:
            rel = path.resolve().parent.relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            rel = ""
        where = "/".join(p for p in (prefix, rel) if p and p != ".") or None
        mlc.log_artifact(run_id, str(path), artifact_path=where)


def source_tags(command: str) -> dict[str, Any]:
    """Tags every vitcli run carries: the command, vitcli's version and git commit, the SLURM job."""
    import vitcli

    tags: dict[str, Any] = {"vitcli.command": command, "vitcli.version": getattr(vitcli, "__version__", None),
                            "mlflow.source.name": f"vitcli {command}", "mlflow.source.type": "LOCAL"}
    try:
        from mlflow.utils.git_utils import get_git_commit

        tags["mlflow.source.git.commit"] = get_git_commit(os.path.dirname(vitcli.__file__))
    except Exception:  # no git, no GitPython: the tag is left out
        pass
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    tags["slurm.job_id"] = job or os.environ.get("SLURM_JOB_ID")
    return tags
