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


def test_layers_go_one_way():
    """cli -> commands -> library -> engine/data/models: a command never imports another command,
    nothing imports the cli, and engine/data/models never import commands."""
    graph = import_graph()
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            if dep == "vitcli.cli" and mod != "vitcli.__main__":
                bad.append((mod, dep))
            if dep.startswith("vitcli.commands.") and not (mod == "vitcli.cli" or mod == "vitcli.commands"):
                bad.append((mod, dep))
            low = mod.startswith(("vitcli.engine", "vitcli.data", "vitcli.models"))
            if low and dep.startswith(("vitcli.commands", "vitcli.cli")):
                bad.append((mod, dep))
    assert bad == []


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
