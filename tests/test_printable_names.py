"""Names that come from data (file names, tar members, class folders) are printed so that control
characters in them act neither on the terminal nor on the log: an escape sequence in a file name
used to reach both raw (it could recolour, retitle or clear the user's terminal), a newline in a
class name split the log line, and rich tables passed escape sequences through and read a name's
'[...]' as markup."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vitcli.core.errors import printable
from vitcli.data.balance import counts_table

ESC = "\x1b[31mRED\x1b]0;title\x07"


def test_a_file_name_with_escape_sequences_is_logged_quoted(cli, tmp_path):
    root = tmp_path / "data"
    for split, n in (("train", 40), ("val", 10)):
        for c, level in (("a", 40), ("b", 200)):
            (root / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(root / split / c / f"{i}.png")
    bad = root / "train" / "a" / f"bad{ESC}.png"
    bad.write_bytes(b"not an image")
    run = tmp_path / "run"
    proc = cli("train", "data=imagefolder", f"data.root={root}", "data.img_size=8", "data.format=files",
               "data.num_workers=0", "data.max_bad_fraction=0.5", "model=vit_pico", "model.patch_size=4",
               "trainer.epochs=1", "trainer.progress=none", f"hydra.run.dir={run}")
    log = "\n".join(p.read_text() for p in run.glob("*.log"))
    for where in (proc.stdout + proc.stderr, log):
        warning = [line for line in where.splitlines() if "skipped 1 unreadable file(s)" in line]
        assert len(warning) == 1 and "\x1b" not in where and "\x07" not in where
        assert repr(str(bad)) in warning[0]  # quoted, every character shown


def test_class_names_in_the_counts_line_stay_one_line():
    line = counts_table(np.array([3, 5, 4]), ["ok", f"two\nlines{ESC}", "tab\there"])
    assert "\n" not in line and "\x1b" not in line and "\t" not in line
    assert line == f"ok 3, {printable(f'two{chr(10)}lines{ESC}')} 5, 'tab\\there' 4"


def rendered(table) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=True).print(table)  # as on a terminal: styles on
    return buf.getvalue()


def test_rich_tables_show_data_names_as_text():
    """rich drops BEL but passes ESC sequences (\\x1b[2J clears the screen) and reads '[...]' as markup."""
    from pathlib import Path

    from vitcli.tasks.eval_report import worst_table
    from vitcli.tasks.predict_images import ImagePredictions, preview_table

    names = [f"clear\x1b[2J{i}" for i in range(2)] + ["[bold red]loud[/]"]
    rep = {"accuracy": np.array([50.0, 80.0, 10.0]), "f1-score": np.array([0.5, 0.8, 0.1]),
           "support": np.array([4, 5, 6]), "confused_with": np.array([1, 0, 0]), "confused_count": np.array([2, 1, 3])}
    text = rendered(worst_table(rep, names, 3, "worst"))
    assert "\x1b[2J" not in text and "[bold red]loud[/]" in text and "'clear\\x1b[2J0'" in text
    result = ImagePredictions([f"/d/a{ESC}.png", "/d/[b].png"], [["[i]x[/]", "y"], ["y", "x"]], [[0.7, 0.3], [0.6, 0.4]],
                              csv_path=Path("preds.csv"))
    text = rendered(preview_table(result))
    assert "\x1b]0;" not in text and "[b].png" in text and "[i]x[/] 70.0%" in text and repr(f"a{ESC}.png") in text
