"""Every command the README and the documentation site show is a test.

1. The README's commands table: every command is listed, and its documented minimal form (optional
   [...] parts left out; DIR and PATH filled with a copy of the shared tiny run, an image folder or a
   small image-folder dataset) runs to a clean exit.
2. Every command in a fenced ```bash block of README.md and docs/**/*.md (continuation lines joined,
   comments dropped) is classified by the first matching row of RULES, which says what is done with
   it and why it cannot simply run here:
   - a handful run for real, in order, on generated data (REAL: the README's own-data commands, the
     MiniPlaces tutorial's prepare -> train -> eval -> predict, the timm export and its Python snippet),
     with tiny sizes appended and the files the page promises checked;
   - every other `vitcli` command is composed as Hydra would (`--cfg job`: misspelt keys, wrong types,
     unknown options fail), sweeps (-m) point by point, and for train / preview / probe the settings
     the trainer checks at start-up are checked and the model is built on PyTorch's meta device (an
     input size the patch size does not divide fails); hub weights and weight files are left out;
   - commands wrapped in sbatch, torchrun or docker have their vitcli part composed;
   - pip commands name extras that exist; benchmark commands name scripts and options that exist.
   A command that matches no row fails: give it one.
3. Python blocks are run (REAL_PYTHON) or skipped with the reason in PYTHON_SKIPS.

The commands run in this process through `vitcli.cli.main` (the real dispatch and Hydra apps,
without a Python and torch start-up each); `vitcli models` also runs as a real process.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from jpeg_trees import make_imagefolder, make_miniplaces
from PIL import Image

from vitcli.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]

# commands the table lists before their code lands (name -> who builds it); they must appear in the
# table, and their minimal form runs once the command exists
PENDING_COMMANDS: dict[str, str] = {}


# ---- the commands table -----------------------------------------------------------------------

def table_commands() -> list[str]:
    """The first cell of every row of the README's commands table, unescaped."""
    section = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [cell.replace("\\|", "|") for cell in re.findall(r"^\| `(vitcli [^`]+)` \|", section, re.M)]


def minimal_form(line: str) -> list[str]:
    """'vitcli eval run=DIR [split=val]' -> ['eval', 'run=DIR']."""
    return re.sub(r"\s*\[[^\]]*\]", "", line).split()[1:]


@pytest.fixture(scope="module")
def places(tiny_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("readme")
    runs = [Path(shutil.copytree(tiny_run, root / "runs" / "tiny" / name)) for name in ("a", "b")]
    images = root / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"p{k}.png")
    return {"cwd": root, "run": runs[0], "run_b": runs[1], "images": images,
            "dataset": make_imagefolder(root / "folder", per_class=2, size=16)}


def fill(args: list[str], places: dict[str, Path], tiny: list[str]) -> list[str]:
    out = []
    for a in args:
        if a == "train":
            out += ["train", *tiny, f"hydra.run.dir={places['cwd'] / 'trained'}"]
            continue
        if a == "plan":  # train's tiny overrides, and the fewest measured steps
            out += ["plan", *tiny, "plan.warmup=1", "plan.steps=1"]
            continue
        a = a.replace("runs=[DIR,DIR]", f"runs=[{places['run']},{places['run_b']}]")
        a = a.replace("data.root=DIR", f"data.root={places['dataset']}").replace("run=DIR", f"run={places['run']}")
        out.append(a.replace("images=PATH", f"images={places['images']}"))
    return out


def run_in_process(args: list[str], cwd: Path, capfd, monkeypatch) -> tuple[int, str, str]:
    from vitcli import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["vitcli"])
    capfd.readouterr()
    try:
        cli.main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def test_the_table_lists_every_command():
    listed = {minimal_form(line)[0] for line in table_commands()}
    assert listed == set(COMMANDS) | set(PENDING_COMMANDS)


@pytest.mark.parametrize("line", table_commands())
def test_documented_minimal_form_runs(line, places, tiny_overrides, capfd, monkeypatch):
    command = minimal_form(line)[0]
    if command not in COMMANDS:
        pytest.skip(f"`vitcli {command}` is being built by {PENDING_COMMANDS[command]}")
    args = fill(minimal_form(line), places, tiny_overrides)
    assert not any(p in " ".join(args) for p in ("DIR", "PATH", "...")), args
    code, out, err = run_in_process(args, places["cwd"], capfd, monkeypatch)
    assert code == 0 and "Traceback" not in out + err, f"{' '.join(args)} -> {code}\n{out}\n{err}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_of_every_command(command, capfd, monkeypatch, tmp_path):
    code, out, err = run_in_process([command, "--help"], tmp_path, capfd, monkeypatch)
    assert code == 0 and "Traceback" not in out + err and "keys (key=default (type) what it does):" in out, out + err


def test_models_bare_in_a_real_process(cli, tmp_path):
    proc = cli("models", cwd=tmp_path)
    assert "vit_pico" in proc.stdout and "resnet18" in proc.stdout and "CNN" in proc.stdout


# ---- commands in the fenced blocks of README.md and docs/ -------------------------------------

@dataclass(frozen=True)
class Command:
    page: str  # path relative to the repo
    line: int
    text: str  # continuation lines joined, comment dropped

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def fenced_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line of the opening fence, lines) of every fenced block."""
    blocks, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)", lines[i])
        if not m:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(m.group(1)):])
            i += 1
        blocks.append((m.group(2), start, body))
        i += 1
    return blocks


def strip_comment(line: str) -> str:
    """Drop a trailing `# comment` that is outside quotes (as the shell does)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def shell_commands() -> list[Command]:
    found = []
    for path in PAGES:
        for lang, start, body in fenced_blocks(path):
            if lang != "bash":
                continue
            pending, first = "", None
            for k, raw in enumerate(body):
                line = strip_comment(raw)
                if not line.strip() and not pending:
                    continue
                first = first or start + k + 1
                if line.endswith("\\"):
                    pending += line[:-1].strip() + " "
                    continue
                found.append(Command(str(path.relative_to(REPO)), first, (pending + line.strip()).strip()))
                pending, first = "", None
    return found


def python_blocks() -> list[Command]:
    return [Command(str(p.relative_to(REPO)), start, "\n".join(body))
            for p in PAGES for lang, start, body in fenced_blocks(p) if lang == "python"]


# The table: (pattern on the command, what is done, why it cannot simply run here). First match wins.
RULES: list[tuple[str, str, str]] = [
    (r'^python3 -m venv \.venv && \. \.venv/bin/activate && pip install -e "\.\[dev\]" && python -m pytest',
     "ci", "the CI command itself: .ci/run runs it on a clean clone (checked verbatim)"),
    (r"^python3 -m venv \.venv && \. \.venv/bin/activate && pip install \. && vitcli train$",
     "install", "a fresh virtualenv installing from PyPI (network); `vitcli train` runs in the table test"),
    (r"^python3 -m venv .* pip install ", "extras", "a fresh virtualenv installing from PyPI (network); the extras are checked"),
    (r"^pip install ", "extras", "installs from PyPI (network); the extras it names are checked against pyproject"),
    (r"^(git clone|cd /data/miniplaces && wget) ", "skip", "downloads the MiniPlaces kit (network)"),
    (r"^mkdocs (serve|build)", "skip", "tests/test_docs.py builds the site with --strict"),
    (r"^python docs/gen_reference\.py", "skip", "tests/test_docs.py regenerates the reference pages and compares"),
    (r"^python -m pytest", "skip", "the test suite itself"),
    (r"^python benchmarks/", "bench", "a benchmark: minutes of measurement; the script and its options are checked"),
    (r'^eval "\$\(tests/slurm/cluster\.sh up\)"', "skip", "starts a SLURM cluster as root (apt, munge): tests/slurm does"),
    (r"^scontrol ", "skip", "acts on a SLURM job: tests/slurm/test_on_cluster.py does it"),
    (r'^eval "\$\(vitcli train -sc install=bash\)"', "completion", "installs completion into this shell: the script is generated"),
    (r"^sbatch ", "wrapped", "needs a SLURM cluster: its `vitcli train` overrides are composed (tests/slurm submits it)"),
    (r"^torchrun ", "wrapped", "needs two machines: its `vitcli train` overrides are composed"),
    (r"^docker build ", "skip", "needs a Docker engine: tests/test_docker.py checks the Dockerfile"),
    (r"^(mlflow (server|ui)|tensorboard) ", "skip", "starts a web server that runs until stopped: tests/services.py "
     "starts `mlflow server` for tests/test_mlflow.py, tests/test_tensorboard.py reads the event files it shows"),
    (r"^docker run ", "wrapped", "needs a Docker engine: the vitcli command after the image is composed"),
    (r"^vitcli info( |$)", "skip", "tests/test_info.py runs vitcli info (with runs_root) and checks its report"),
    (r"^vitcli .*hydra/launcher=slurm", "compose", "submits SLURM jobs"),
    (r"^vitcli .*model\.pretrained=true", "compose", "downloads timm hub weights (network) and wants a GPU"),
    (r"^vitcli .*experiment=miniplaces_", "compose", "a leaderboard recipe: hub weights, 224 px on a GPU"),
    (r"^vitcli .*experiment=(deit|swin)_", "compose", "an ImageNet recipe: days on 8 GPUs"),
    (r"^vitcli .*(model|distill\.teacher)\.?weights=/weights", "compose", "needs the weights file"),
    (r"^vitcli .*trainer\.devices=[2-9]", "compose", "needs several GPUs"),
    (r"^vitcli .*(/shared/|/data/imagenet|/data/inet)", "compose", "needs ImageNet-size data"),
    (r"^vitcli .*data=(wds|hf)", "compose", "needs shards or a Hugging Face dataset (tests/test_wds*.py, tests/test_hf.py run them)"),
    (r"^vitcli .*--cfg job", "compose", "composes and prints, as written"),
    (r"^vitcli train -m ", "compose", "a sweep of full trainings"),
    (r"^vitcli .*logger=wandb", "compose", "a W&B run (an account, or offline files)"),
    (r"^vitcli (eval|predict|export|explain|probe|ensemble|runs|models)( |$)", "compose",
     "reads trained runs or lists presets: each command runs for real on a tiny run in the table test"),
    (r"^vitcli plan( |$)", "compose", "measures steps of the run it names (tests/test_plan.py runs plans; the "
     "table test runs the bare command on a tiny run)"),
    (r"^vitcli (train|preview|prepare)\b", "compose",
     "a full-size run on real data (minutes to hours); the tiny real rows run the loop"),
]

# Run for real, in order, per page: (page, command as written). Placeholders: RUN_DIR is the newest run
# under the page's runs/ (after a train) or the shared tiny run; /data/... are generated stand-ins.
# run=mine and run=latest are left to vitcli (they name the newest run under the page's runs/).
REAL: dict[str, list[str]] = {
    "README.md": [
        "vitcli train data=imagefolder data.root=/data/mine name=mine",
        "vitcli eval run=mine",
        "vitcli predict run=mine images=/data/new_photos",
    ],
    "docs/tutorials/miniplaces.md": [
        "vitcli prepare data=miniplaces data.root=/data/miniplaces",
        "vitcli train data=miniplaces data.root=/data/miniplaces data.format=packed model=resnet18 "
        "augmentation=basic trainer.epochs=5 name=mp_baseline",
        "vitcli eval run=RUN_DIR",
        "vitcli predict run=RUN_DIR split=test",
    ],
    "docs/tutorials/use-a-model.md": [
        "vitcli export run=RUN_DIR",
        "PYTHON local-dir:RUN_DIR/export/best_timm",  # the Python block holding this text
    ],
}
# what each real command must leave behind, as the page says (relative to RUN_DIR, or to the data)
PROMISED: dict[str, list[str]] = {
    "vitcli eval run=RUN_DIR": ["eval/val_best.json", "plots/confusion_val_best.png"],
    "vitcli eval run=mine": ["eval/val_best.json", "plots/confusion_val_best.png"],
    "vitcli predict run=mine images=/data/new_photos": ["predictions/new_photos.csv"],
    "vitcli predict run=RUN_DIR split=test": ["predictions/test.npz", "submission/test_top5.txt",
                                              "submission/test_kaggle.csv"],
    "vitcli export run=RUN_DIR": ["export/best_timm/config.json", "export/best_timm/model.safetensors"],
}
# appended to a real train: tiny sizes, one epoch, no loader workers
TINY_TRAIN = ["data.img_size=16", "data.batch_size=8", "trainer.epochs=1", "trainer.progress=plain",
              "trainer.log_interval=2", "data.num_workers=0"]

PYTHON_SKIPS = {
    "vit_small_patch14_dinov2.lvd142m": "downloads DINOv2 from the timm hub (network)",
    "onnxruntime as ort": "needs an ONNX export (about a minute on 2 cores); tests/test_export.py checks "
                          "onnxruntime against torch on exported files",
}


def rule_for(text: str) -> tuple[str, str]:
    for pattern, how, reason in RULES:
        if re.search(pattern, text):
            return how, reason
    raise AssertionError(f"no row of RULES in {__file__} matches this command: add one, with the reason")


def real_texts(page: str) -> set[str]:
    return {t for t in REAL.get(page, []) if not t.startswith("PYTHON ")}


DOC_COMMANDS = shell_commands()
# each distinct command once (the first place it is shown), the real ones left to their page's test
COMPOSED = list({c.text: c for c in reversed(DOC_COMMANDS) if c.text not in real_texts(c.page)}.values())[::-1]


def test_commands_are_found_in_every_page_that_shows_some():
    pages = {c.page for c in DOC_COMMANDS}
    assert {"README.md", "docs/tutorials/miniplaces.md", "docs/tutorials/cluster.md",
            "docs/tutorials/use-a-model.md", "docs/reference/commands.md", "docs/reference/config.md"} <= pages
    assert len(DOC_COMMANDS) > 100


def test_no_command_hides_outside_a_bash_block():
    """Commands in indented code or unlabelled fences would escape this test."""
    hidden = []
    for path in PAGES:
        in_fence = False
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip().startswith("```"):
                if not in_fence and line.strip() == "```":
                    hidden.append(f"{path.relative_to(REPO)}:{n}: a fence without a language")
                in_fence = not in_fence
            elif not in_fence and re.match(r"^( {4,}|\t)(vitcli|python|pip|sbatch|torchrun|docker) ", line):
                hidden.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hidden == []


def test_every_real_command_is_on_its_page():
    for page, texts in REAL.items():
        shown = {c.text for c in DOC_COMMANDS if c.page == page}
        blocks = "\n".join(c.text for c in python_blocks() if c.page == page)
        for text in texts:
            assert (text[len("PYTHON "):] in blocks) if text.startswith("PYTHON ") else (text in shown), (page, text)


@pytest.mark.parametrize("command", COMPOSED, ids=str)
def test_documented_command(command: Command, compose, cli):
    how, reason = rule_for(command.text)
    assert reason
    tokens = [shell_tilde(t) for t in shlex.split(command.text)]
    if how in ("compose", "wrapped"):
        args = vitcli_args(tokens) if how == "wrapped" else tokens[1:]
        compose_command(args, compose)
    elif how == "extras":
        check_extras(command.text)
    elif how == "ci":
        assert command.text == (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    elif how == "install":
        pass  # the reason says where it is covered
    elif how == "bench":
        check_benchmark(tokens)
    elif how == "completion":
        check_completion(cli)
    else:
        assert how == "skip", how


def test_python_blocks_are_run_or_skipped_with_a_reason():
    for block in python_blocks():
        real = any(t[len("PYTHON "):] in block.text for texts in REAL.values() for t in texts if t.startswith("PYTHON "))
        skipped = [reason for key, reason in PYTHON_SKIPS.items() if key in block.text]
        assert real or skipped, f"{block.page}:{block.line}: run this Python block in REAL or give a reason in PYTHON_SKIPS"


# ---- composing, as `--cfg job` does, and what train checks before it starts -------------------

def shell_tilde(token: str) -> str:
    """`images=~/photos` as bash hands it over (a tilde after the first `=` is expanded)."""
    key, eq, value = token.partition("=")
    return f"{key}={os.path.expanduser(value)}" if eq and value.startswith("~/") else os.path.expanduser(token)


def vitcli_args(tokens: list[str]) -> list[str]:
    """The vitcli arguments inside sbatch / torchrun / docker run."""
    if tokens[0] == "sbatch":
        script = next(k for k, t in enumerate(tokens) if t.endswith(".sbatch"))
        assert (REPO / tokens[script]).is_file(), tokens[script]
        return ["train", *tokens[script + 1:]]
    if tokens[0] == "torchrun":
        k = tokens.index("-m")
        assert tokens[k + 1] == "vitcli"
        return tokens[k + 2:]
    return tokens[tokens.index("vitcli") + 1:]  # docker run ... IMAGE(vitcli) COMMAND ...


def compose_command(args: list[str], compose) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    command, rest = args[0], args[1:]
    assert command in COMMANDS, f"unknown command {command}"
    if "--cfg" in rest:
        k = rest.index("--cfg")
        rest = rest[:k] + rest[k + 2:]
    multirun = "-m" in rest
    rest = [a for a in rest if a != "-m"]
    assert not any(a.startswith("-") for a in rest), rest
    overrides = OverridesParser.create().parse_overrides(rest)
    assert multirun or not any(o.is_sweep_override() for o in overrides), "a comma list needs -m"
    points = BasicSweeper.split_arguments(overrides, None)[0] if multirun else [rest]
    for point in points[:4]:
        cfg = compose(command, point, return_hydra_config=True)
        check_train_config(command, cfg)


_BUILT: set[str] = set()


def check_train_config(command: str, cfg) -> None:
    """What `vitcli train` checks before any work: the trainer and LoRA settings, and the model built
    on the meta device (no memory, no weights) so that an input size the patch does not divide fails."""
    if command not in ("train", "preview", "probe"):
        return
    import torch
    from omegaconf import OmegaConf

    from vitcli.engine.build import validate_lora_cfg, validate_trainer_cfg
    from vitcli.models.factory import create_model

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(job, resolve=True)  # every interpolation resolves
    validate_trainer_cfg(job.trainer)
    validate_lora_cfg(job)
    model = OmegaConf.to_container(job.model, resolve=True)
    model.update(pretrained=False, weights=None, peft="none")
    key = repr((model, job.regularization.drop_path_rate, job.regularization.drop_rate))
    if key in _BUILT:
        return
    with torch.device("meta"):
        create_model(OmegaConf.merge(job.model, model), int(job.data.num_classes or 10), job.regularization)
    _BUILT.add(key)


def check_extras(text: str) -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = [e for group in re.findall(r"\.\[([a-z,]+)\]", text) for e in group.split(",")]
    assert named, text
    assert set(named) <= extras, f"{text}: no extra {set(named) - extras} in pyproject.toml"


def check_benchmark(tokens: list[str]) -> None:
    script = REPO / tokens[1]
    assert script.is_file(), tokens[1]
    source = script.read_text()
    for flag in (t for t in tokens[2:] if t.startswith("--")):
        assert f'"{flag}"' in source, f"{tokens[1]} has no option {flag}"


def check_completion(cli) -> None:
    proc = cli("train", "-sc", "install=bash")
    assert "complete" in proc.stdout and "vitcli" in proc.stdout


# ---- the real runs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    """Generated data where the pages name real datasets."""
    root = tmp_path_factory.mktemp("data")
    photos = root / "new_photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(photos / f"img{k}.jpg")
    make_miniplaces(root / "miniplaces", classes=6, per_class=4, val=2, test=6, size=16, list_dir="data")
    return {"/data/miniplaces": root / "miniplaces", "/data/mine": make_imagefolder(root / "mine", classes=tuple("abcdef"), per_class=3, size=16),
            "/data/new_photos": photos}


def newest_run(cwd: Path) -> Path:
    from vitcli.core.runs import SUMMARY, find_run_dirs

    return max(find_run_dirs(cwd / "runs"), key=lambda d: (d / SUMMARY).stat().st_mtime)


def run_page(page: str, cwd: Path, stand_ins: dict[str, Path], cli, run_dir: Path | None = None) -> Path | None:
    for text in REAL[page]:
        if text.startswith("PYTHON "):
            block = next(b for b in python_blocks() if b.page == page and text[len("PYTHON "):] in b.text)
            Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(cwd / "photo.jpg")
            code = block.text.replace("RUN_DIR", str(run_dir))
            saved = os.getcwd()
            try:
                os.chdir(cwd)
                exec(compile(code, f"{page}:{block.line}", "exec"), {})
            finally:
                os.chdir(saved)
            continue
        line = text
        for name, path in stand_ins.items():
            line = line.replace(name, str(path))
        args = shlex.split(line)[1:]
        if run_dir is not None:
            args = [a.replace("RUN_DIR", str(run_dir)) for a in args]
        if args[0] == "train":
            args += TINY_TRAIN
        proc = cli(*args, cwd=cwd)
        assert "Traceback" not in proc.stdout + proc.stderr, text
        if args[0] == "train":
            run_dir = newest_run(cwd)
        where = run_dir if re.search(r"run=(RUN_DIR|latest|mine)\b", text) else None
        for rel in PROMISED.get(text, []):
            assert where is not None and (where / rel).is_file(), f"{text}: {rel} missing"
    return run_dir


def test_readme_own_data_commands_run(stand_ins, cli, tmp_path):
    run_dir = run_page("README.md", tmp_path, stand_ins, cli)
    assert run_dir.parent == tmp_path / "runs" / "mine"  # runs/<name>/<stamp>, as the README says
    rows = (run_dir / "predictions" / "new_photos.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("path,class_1,prob_1")


def test_miniplaces_tutorial_runs_to_the_submission_files(stand_ins, cli, tmp_path):
    kit = stand_ins["/data/miniplaces"]
    run_dir = run_page("docs/tutorials/miniplaces.md", tmp_path, stand_ins, cli)
    assert (kit / "packed" / "train" / "images.npy").is_file()  # prepare wrote <root>/packed/
    assert run_dir.parent == tmp_path / "runs" / "mp_baseline"
    lines = (run_dir / "submission" / "test_top5.txt").read_text().splitlines()
    tests = sorted(p.relative_to(kit / "images").as_posix() for p in (kit / "images" / "test").glob("*.jpg"))
    assert [line.split()[0] for line in lines] == tests
    assert all(len(set(line.split()[1:])) == 5 for line in lines)  # five distinct labels, as the page says
    assert (run_dir / "submission" / "test_kaggle.csv").read_text().splitlines()[0] == "Id,Category"


def test_use_a_model_export_and_the_timm_snippet_run(tiny_run_copy, stand_ins, cli, tmp_path, capsys):
    run_page("docs/tutorials/use-a-model.md", tmp_path, stand_ins, cli, run_dir=tiny_run_copy)
    printed = capsys.readouterr().out
    assert printed.count("%") == 5 and "class_" in printed  # the top-5 (name, probability) pairs
