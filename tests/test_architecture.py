"""The shape of the code, read from the source (nothing imported): no import cycles, layers that
go one way, small modules. Lazy imports inside functions count: they still tie modules together."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vitcli"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the vitcli modules it imports (at top level or inside functions)."""
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path):
    pkg = tmp_path / "vitcli"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vitcli import b\n")
    (pkg / "b.py").write_text("def f():\n    from vitcli.a import x\n")
    graph = import_graph(pkg)
    assert graph["vitcli.b"] == {"vitcli.a"}
    assert cycles(graph) == [["vitcli.a", "vitcli.b"]]


def test_vitcli_has_no_import_cycles():
    assert cycles(import_graph()) == []


# Packages in layer order: a package may import only packages of a lower layer (its own
# modules aside). Packages on one layer never import each other.
LAYERS = {"core": 0, "data": 1, "models": 1, "viz": 2, "loss": 2, "launch": 2, "engine": 3, "search": 4,
          "tasks": 5, "commands": 6, "cli": 7, "__main__": 8}
TOP_LEVEL = {"vitcli", "vitcli.cli", "vitcli.__main__"}  # the only modules beside the packages


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            a, b = layer_of(mod), layer_of(dep)
            if dep == "vitcli" or a == b:
                continue
            if a not in LAYERS or b not in LAYERS or LAYERS[b] >= LAYERS[a]:
                bad.append((mod, dep))
    return sorted(bad)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    pkg = tmp_path / "vitcli"
    for sub in ("core", "engine"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "loop.py").write_text("from vitcli.core import io\n")
    (pkg / "core" / "io.py").write_text("def f():\n    from vitcli.engine.loop import g\n")
    assert layer_violations(import_graph(pkg)) == [("vitcli.core.io", "vitcli.engine.loop")]


def test_packages_import_only_lower_layers():
    """core <- data, models <- viz, loss, launch <- engine <- search <- tasks <- commands <- cli, lazy imports included;
    so no two packages import each other, and a command never imports another command."""
    graph = import_graph()
    assert layer_violations(graph) == []
    commands = [(m, d) for m, deps in graph.items() for d in deps
                if m.startswith("vitcli.commands.") and d.startswith("vitcli.commands.")]
    assert commands == []


def test_every_module_lives_in_a_package():
    """At most the entry points sit at the top of vitcli/, each package says what it holds and may import."""
    top = {module_name(PACKAGE, p) for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent != PACKAGE and init.parent.parent == PACKAGE:
            assert "May import" in doc, f"{init} must say what lives there and what it may import"


def test_pyproject_ships_every_package():
    """`pip install .` (not only -e) must carry every subpackage."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(PACKAGE, p) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def test_the_design_page_architecture_names_only_modules_that_exist():
    """Every package and module the module map of docs/design.md's Architecture section names is on
    disk, and every module on disk but the commands (one per command: the README's commands table) is
    named there."""
    import re

    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    section = design.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in section.split("```")[1::2] if "vitcli/cli.py" in b)
    named: set[str] = set()
    package = None
    for line in block.splitlines():
        m = re.match(r"(vitcli/\S*)", line)
        if m:
            package = m.group(1).rstrip("/")
        if package is None:
            continue
        if package.endswith(".py"):
            named.add(package)
            continue
        named |= {f"{package}/{name}" for name in re.findall(r"\b([a-z_]+\.py)\b", line)}
    on_disk = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
               and p.name != "__main__.py" and "conf" not in p.parts and p.parent.name != "commands"}
    assert {n for n in named if not (PACKAGE.parent / n).is_file()} == set()
    assert on_disk - named == set()
