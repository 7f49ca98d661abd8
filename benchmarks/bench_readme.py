"""How far a new user reads: the README of a git revision against the working tree, side by side.

    python benchmarks/bench_readme.py --rev 0cab4f4

Prints the README's length and, for a course student, the lines read before the first MiniPlaces
training command and before the submission file (`_top5.txt`), along two paths:

- README only: reading the README from the top;
- following the link: reading the README from the top until its first link to the MiniPlaces
  tutorial, then the tutorial from its top (where the revision has no such link, the same as
  README only).

"Lines read before X" counts every line above X's line, blank lines included.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = "docs/tutorials/miniplaces.md"
TARGETS = {
    "first MiniPlaces training command": re.compile(r"vitcli train\b.*\b(data=miniplaces|experiment=miniplaces_)"),
    "the submission file": re.compile(r"_top5\.txt"),
}


def read(rev: str | None, path: str) -> list[str] | None:
    """A file of the working tree (rev None) or of a git revision; None when it does not exist."""
    if rev is None:
        p = REPO / path
        return p.read_text().splitlines() if p.is_file() else None
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else None


def lines_before(lines: list[str], target: re.Pattern) -> int | None:
    return next((n for n, line in enumerate(lines) if target.search(line)), None)


def following_the_link(readme: list[str], tutorial: list[str] | None, target: re.Pattern) -> int | None:
    link = next((n for n, line in enumerate(readme) if f"({TUTORIAL}" in line), None)
    here = lines_before(readme, target)
    if link is None or tutorial is None or (here is not None and here <= link):
        return here
    there = lines_before(tutorial, target)
    return None if there is None else link + 1 + there


def measure(rev: str | None) -> dict[str, int | None]:
    readme, tutorial = read(rev, "README.md"), read(rev, TUTORIAL)
    assert readme is not None, f"no README.md at {rev}"
    row: dict[str, int | None] = {"README lines": len(readme)}
    for name, target in TARGETS.items():
        row[f"README only: lines before {name}"] = lines_before(readme, target)
        row[f"following the link: lines before {name}"] = following_the_link(readme, tutorial, target)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="0cab4f4", help="the git revision to compare with (before)")
    args = parser.parse_args()
    before, after = measure(args.rev), measure(None)
    width = max(map(len, before))
    print(f"{'':<{width}}  {'before (' + args.rev + ')':>18}  {'after (worktree)':>18}  {'ratio':>6}")
    for key in before:
        b, a = before[key], after[key]
        ratio = f"{a / b:.2f}" if a is not None and b else ""
        print(f"{key:<{width}}  {str(b):>18}  {str(a):>18}  {ratio:>6}")


if __name__ == "__main__":
    main()
