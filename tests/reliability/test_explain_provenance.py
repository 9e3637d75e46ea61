"""``naslung explain`` checks the run against the data and fold it explains (:mod:`naslung.explain.guards`).

A table of probes: each runs ``explain`` on a tiny trained run and asserts exit 2, one ``error:`` line naming
the run (and the data or the fold), and that every file present before is byte-identical after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from .runtime_support import TRAIN_FAST, cli, error_line, write_tiny


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain_provenance")
    data = write_tiny(root / "d.h5")
    other = write_tiny(root / "other.h5", seed=1)  # same crop settings, other nodules
    copy = root / "copy.h5"  # the run's own data under another name: accepted
    shutil.copy(data, copy)
    runs = {}
    for name, source in (("RUN", data), ("OTHERRUN", other)):
        runs[name] = root / name.lower()
        trained = cli("train", "--data", source, "--fold", 1, "--out", runs[name], *TRAIN_FAST,
                      "--epochs", "1")
        assert trained.exit_code == 0, trained.output
    return {"root": root, "DATA": data, "OTHER": other, "COPY": copy, **runs}


def _argv(world: dict[str, Path], tmp_path: Path, args: list[str]) -> list[str]:
    keys = sorted((k for k in world if k.isupper()), key=len, reverse=True)
    out = []
    for arg in args:
        for key in keys:
            if arg == key:
                arg = str(world[key])
        out.append(arg.replace("TMP", str(tmp_path)))
    return out


EXPLAIN = ["explain", "RUN", "--out", "TMP/e", "--per-group", "1"]
#: (id, command line, keys of world the line must name, fragments it must hold)
REFUSED: list[tuple[str, list[str], tuple[str, ...], tuple[str, ...]]] = [
    ("other-data", [*EXPLAIN, "--data", "OTHER", "--fold", "1"], ("RUN", "OTHER"),
     ("another dataset", "fingerprint")),
    ("other-data-of-compare", [*EXPLAIN, "--data", "DATA", "--fold", "1", "--compare", "OTHERRUN"],
     ("OTHERRUN", "DATA"), ("another dataset",)),
    ("seen-fold", [*EXPLAIN, "--data", "DATA", "--fold", "2"], ("RUN",),
     ("fold 2", "test fold is 1", "--fold 1", "--allow-seen-fold")),
    ("seen-fold-other-data", [*EXPLAIN, "--data", "OTHER", "--fold", "2", "--allow-seen-fold"],
     ("RUN", "OTHER"), ("another dataset",)),
]


@pytest.mark.parametrize(("args", "names", "fragments"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused(world: dict[str, Path], tmp_path: Path, args: list[str], names: tuple[str, ...],
                 fragments: tuple[str, ...]) -> None:
    before = snapshot(world["root"])
    line = error_line(cli(*_argv(world, tmp_path, args)))
    for key in names:
        assert str(world[key]) in line, (key, line)
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(world["root"]) == before
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


@pytest.mark.parametrize(("data", "fold", "flags", "note"), [
    ("COPY", "1", [], None),  # the same content under another path
    ("DATA", "2", ["--allow-seen-fold"], "--allow-seen-fold"),
], ids=["same-content-copy", "seen-fold-allowed"])
def test_accepted(world: dict[str, Path], tmp_path: Path, data: str, fold: str, flags: list[str],
                  note: str | None) -> None:
    before = snapshot(world["root"])
    result = cli(*_argv(world, tmp_path, [*EXPLAIN, "--data", data, "--fold", fold, *flags, "--json"]))
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "e" / "explain.json").read_text())["notes"]
    assert (note is None) == (not any("explained anyway" in n for n in notes)), notes
    if note:
        assert any(str(world["RUN"]) in n and note in n for n in notes), notes
    assert snapshot(world["root"]) == before
