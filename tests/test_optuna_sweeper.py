"""vitcli's optuna sweeper (hydra_plugins/vitcli_optuna_sweeper) on its own: the grammar,
storages, and whole sweeps of a toy Hydra app (tests/optuna_toy_app.py, no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from hydra_plugins.vitcli_optuna_sweeper._errors import SweeperConfigError  # noqa: E402
from hydra_plugins.vitcli_optuna_sweeper._search_space import (  # noqa: E402
    format_value,
    parse_search_space,
)
from hydra_plugins.vitcli_optuna_sweeper.storage import (  # noqa: E402
    RECORD,
    open_storage,
    resolve_storage,
)

APP = Path(__file__).parent / "optuna_toy_app.py"


def toy(*overrides: str, cwd: Path, check: bool = True, wait: bool = True):
    """Run the toy app with -m; wait=False returns the Popen."""
    cmd = [sys.executable, str(APP), "-m", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"toy app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def toy_json(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/toy.json")}


# ---- the search-space grammar ----

def test_grammar_maps_to_optuna_distributions():
    space = parse_search_space(
        {"lr": "tag(log, interval(1e-5, 1e-2))", "wd": "interval(0, 0.3)", "depth": "range(2, 10, 2)",
         "frac": "range(0.1, 0.5, 0.1)", "width": "tag(log, int, interval(8, 512))", "opt": "choice(adamw, sgd)",
         "epochs": "3"},
        ["model=vit_t,swin_t", "wd=0.1"])  # the command line wins on a key: wd becomes fixed
    d = space.distributions
    assert d["lr"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert d["depth"] == IntDistribution(2, 8, step=2)  # Hydra's range excludes its stop
    assert d["frac"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert d["width"] == IntDistribution(8, 512, log=True)
    assert d["opt"] == CategoricalDistribution(["adamw", "sgd"])
    assert d["model"] == CategoricalDistribution(["vit_t", "swin_t"])
    assert "wd" not in d and space.fixed == {"epochs": "epochs=3", "wd": "wd=0.1"}
    assert space.grid() is None  # lr and width are continuous
    assert parse_search_space({"a": "choice(1, 2)", "b": "range(0, 3)"}, []).grid() == {"a": [1, 2], "b": [0, 1, 2]}


@pytest.mark.parametrize("value", ["123", "True", "a b", "it's", "x,y", "null", 1e-5, 0.30000000000000004, True, 3])
def test_override_text_parses_back_to_the_same_value(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_choice_overrides_keep_lists_and_quoted_strings():
    space = parse_search_space({"sizes": "choice([1,2],[3])", "name": "choice('123', abc)"}, [])
    lines = space.overrides({"sizes": "[3]", "name": "123"})
    parser = OverridesParser.create()
    assert [parser.parse_override(line).value() for line in lines] == [[3], "123"]


@pytest.mark.parametrize("entry,message", [
    ("interval(5, 1)", "needs low < high"),
    ("tag(lg, interval(1, 2))", "unknown tag lg"),
    ("tag(log, interval(0, 2))", "positive lower bound"),
    ("tag(log, range(1, 10, 2))", "needs step 1"),
    ("range(5, 1)", "the range is empty"),
    ("interval(1, 2", "cannot parse"),
    ("glob(*)", "not supported"),
])
def test_malformed_params_entry_is_one_line(entry, message):
    with pytest.raises(SweeperConfigError, match=message) as err:
        parse_search_space({"optimizer.lr": entry}, [])
    assert "optimizer.lr" in str(err.value) and "\n" not in str(err.value)


# ---- storages ----

def test_storage_specs(tmp_path):
    sweep = tmp_path / "sweep"
    assert resolve_storage(None, sweep) == str(sweep.absolute() / "optuna_journal.log")
    db = tmp_path / "new" / "folder" / "s.db"  # sqlite cannot make its folder; the sweeper does
    url = resolve_storage(f"sqlite:///{db}", sweep)
    assert url == f"sqlite:///{db}" and db.parent.is_dir()
    optuna.create_study(study_name="s", storage=open_storage(url))
    assert load(url, "s").study_name == "s"
    with pytest.raises(SweeperConfigError, match="sqlite:///"):
        resolve_storage(str(tmp_path / "plain.db"), sweep)  # a plain path is a journal file
    (tmp_path / "a_file").write_text("")  # a folder that cannot exist, even for root
    with pytest.raises(SweeperConfigError, match="cannot write .*a_file/sub/j.log"):
        resolve_storage(str(tmp_path / "a_file" / "sub" / "j.log"), sweep)


# ---- whole sweeps of the toy app ----

def test_toy_sweep_prunes_the_worse_trial_and_a_rerun_resumes_the_study(tmp_path):
    journal = str(tmp_path / "studies" / "toy.log")
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="toy", storage=open_storage(journal), direction="maximize")
    for x in (2.0, 1.0, -4.0, 2.5):  # asked in this order; x=-4 is clearly worse than the median
        study.enqueue_trial({"x": x, "y": 0})
    common = [f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=toy",
              "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2"]
    toy(*common, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path / 's1'}", cwd=tmp_path)

    trials = load(journal, "toy").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE]
    jobs = toy_json(tmp_path / "s1")  # job dir = trial number
    assert sorted(jobs) == [0, 1, 2, 3] and all(jobs[n]["trial"] == n for n in jobs)
    assert jobs[2]["pruned"] and jobs[2]["epochs"] < 4 == jobs[0]["epochs"] == jobs[3]["epochs"]
    assert trials[2].last_step == jobs[2]["epochs"] and trials[2].value == pytest.approx(jobs[2]["value"])
    record = (tmp_path / "s1" / RECORD).read_text()
    assert "MedianPruner" in record and journal in record

    # the same command with n_trials=6 runs the 2 missing trials; the sampler sees the first 4
    proc = toy(*common, "hydra.sweeper.n_trials=6", "hydra.sweeper.plots=true",
               f"hydra.sweep.dir={tmp_path / 's2'}", cwd=tmp_path)
    assert "4 trials so far" in proc.stdout + proc.stderr
    assert len(load(journal, "toy").trials) == 6 and sorted(toy_json(tmp_path / "s2")) == [4, 5]
    pictures = {p.name for p in (tmp_path / "s2" / "plots").glob("*.png")}
    assert pictures == {"optimization_history.png", "param_importances.png", "slice.png", "intermediate_values.png"}
    results = (tmp_path / "s2" / "optimization_results.yaml").read_text()
    assert "best_trial: 0" in results and "PRUNED: " in results  # x=2 is the optimum
    # once the study holds n_trials trials, the same command runs nothing
    toy(*common, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={tmp_path / 's3'}", cwd=tmp_path)
    assert len(load(journal, "toy").trials) == 6 and not toy_json(tmp_path / "s3")


def test_two_joblib_workers_run_trials_of_one_study_side_by_side(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    go = tmp_path / "go"  # trial 0 waits for it; trial 1 creates it: done only if both ran at once
    toy("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
        f"wait_for={go}", f"touch={go}", "hydra/sweeper/pruner=median", f"hydra.sweep.dir={tmp_path / 's'}",
        cwd=tmp_path)
    record = (tmp_path / "s" / RECORD).read_text()
    storage = str(tmp_path / "s" / "optuna_journal.log")  # no storage given: a journal in the sweep dir
    assert storage in record
    study = optuna.load_study(study_name=record.split("study_name: ")[1].split()[0], storage=open_storage(storage))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(len(t.intermediate_values) == 4 for t in study.trials)  # each worker reported every step
    jobs = toy_json(tmp_path / "s")
    assert jobs[0]["pid"] != jobs[1]["pid"]


def test_two_sweeps_share_one_study(tmp_path):
    """Two sweeper processes (two SLURM jobs, say) on one journal: together they run n_trials."""
    journal, go = str(tmp_path / "shared.log"), tmp_path / "go"
    common = [f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=2",
              f"wait_for={go}", f"touch={go}"]
    first = toy(*common, f"hydra.sweep.dir={tmp_path / 'a'}", cwd=tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120  # the first worker's trial 0 is running (and waiting)
        while not (tmp_path / "a" / "0").is_dir():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.stdout else ""
            time.sleep(0.1)
        toy(*common, f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)  # asks trial 1, which releases trial 0
        out, _ = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert [t.state for t in load(journal, "shared").trials] == [TrialState.COMPLETE] * 2
    assert sorted(toy_json(tmp_path / "a")) == [0] and sorted(toy_json(tmp_path / "b")) == [1]


@pytest.mark.parametrize("sampler", ["hydra.sweeper.sampler=grid", "hydra/sweeper/sampler=grid"])
def test_grid_sampler_runs_each_grid_point_once_however_it_is_chosen(tmp_path, sampler):
    """2 x 3 grid points and n_trials=10: six trials, never a grid point twice (by name or by group)."""
    sweep = tmp_path / "s"
    proc = toy(sampler, "x=1.0,2.0", "y=0,1,3", "hydra.sweeper.n_trials=10", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "6 grid points, so n_trials=6" in proc.stdout + proc.stderr
    record = (sweep / RECORD).read_text()
    study = load(str(sweep / "optuna_journal.log"), record.split("study_name: ")[1].split()[0])
    points = [(t.params["x"], t.params["y"]) for t in study.trials]
    assert len(points) == 6 and len(set(points)) == 6 and sorted(toy_json(sweep)) == list(range(6))


@pytest.mark.parametrize("overrides,message", [
    (["hydra.sweeper.pruner=medain"], "hydra.sweeper.pruner=medain: unknown pruner; choose one of none, median"),
    (["hydra.sweeper.storage=/proc/nope/study.log"], "cannot write /proc/nope/study.log"),
])
def test_bad_sweeper_input_is_one_line(tmp_path, overrides, message):
    proc = toy(*overrides, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitcli: error: ") and message in lines[0], proc.stderr


@pytest.mark.parametrize("settings,message", [
    ({"sampler": "bayes"}, "hydra.sweeper.sampler=bayes: unknown sampler; choose one of tpe, random, grid"),
    ({"pruner": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": -1}}, "cannot be negative"),
    ({"direction": "maximise"}, "use minimize or maximize"),
    ({"direction": ["maximize", "minimize"], "pruner": "median"}, "cannot prune a multi-objective"),
    ({"sampler": "grid"}, "grid needs discrete values"),
    ({"params": {}}, "nothing to search"),
    ({"n_trials": 0}, "must be >= 1"),
])
def test_bad_sweeper_settings(tmp_path, settings, message):
    from omegaconf import OmegaConf

    from hydra_plugins.vitcli_optuna_sweeper._sweep import StudySweep
    from hydra_plugins.vitcli_optuna_sweeper.config import OptunaSweeperConf

    s = OptunaSweeperConf(**{"sampler": "tpe", "pruner": "none", "params": {"x": "interval(0, 1)"}, **settings})
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "s")}}})
    with pytest.raises(SweeperConfigError, match=message) as err:
        StudySweep(s, config, launcher=None).run([])
    assert "\n" not in str(err.value)
