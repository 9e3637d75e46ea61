"""What an experiment folder holds: finished runs, cv folders, figures and explanations.

An experiment folder is any folder the user's commands wrote into, e.g. ``runs/``: run folders
(``result.json``; ``naslung train``), cv folders (``cv.json`` + ``fold_<K>/``; ``naslung cv``), a search
folder (``pareto.png``; ``naslung search``), ``naslung explain`` outputs (``explain.json``, ``montage.png``,
``tsne.png``, ``dbi.json``), ``naslung ablate`` summaries (``ablation.json``) and ``ensemble-size``
plots. Everything is found by these file names, at any depth; per-nodule attention PNGs (``nodules/``) are
not figures of the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naslung import schemas
from naslung.data.source import is_phantom_kind, source_kind

#: figure file name pattern -> (order, caption) of the paper's figure it reproduces.
FIGURES: tuple[tuple[str, int, str], ...] = (
    ("pareto.png", 4, "Fig. 4 analogue: architecture search, accuracy vs latency and the Pareto front"),
    ("montage.png", 5, "Fig. 5 analogue: stage-2 spatial attention (CT | map)"),
    ("tsne.png", 6, "Fig. 6 analogue: t-SNE of penultimate features"),
    ("ensemble_size*.png", 7, "Fig. 7 analogue: ensemble size study"),
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RunInfo:
    """One finished training run."""

    path: Path
    result: dict[str, Any]
    config: dict[str, Any]
    cv_dir: Path | None

    @property
    def train_config(self) -> dict[str, Any]:
        return self.config.get("config") or self.result.get("config") or {}

    @property
    def test_fold(self) -> int | None:
        return self.result.get("test_fold")

    @property
    def phantom(self) -> bool:
        return is_phantom_kind(source_kind(self.config))

    @property
    def source(self) -> str | None:
        return (self.config.get("dataset") or {}).get("source")

    def describe(self) -> str:
        c = self.train_config
        return f"{self.result.get('spec')} {c.get('loss', '?')} {c.get('attention', '?')}"


@dataclass
class Figure:
    path: Path
    order: int
    caption: str


@dataclass
class Experiment:
    """The artefacts found under ``root``."""

    root: Path
    runs: list[RunInfo] = field(default_factory=list)
    cv_dirs: dict[Path, dict[str, Any]] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    dbi: list[tuple[Path, list[dict[str, Any]]]] = field(default_factory=list)
    ablations: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)

    @property
    def phantom(self) -> bool:
        return any(r.phantom for r in self.runs)


def _caption(path: Path) -> tuple[int, str] | None:
    for pattern, order, caption in FIGURES:
        if path.match(pattern):
            return order, caption
    return None


def discover(root: str | Path) -> Experiment:
    """Scan ``root`` recursively; ``FileNotFoundError`` when it is not a folder or holds no finished run."""
    from naslung.train.rundir import runs_under  # the package imports torch; only the layout is needed

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: experiment folder not found")
    exp = Experiment(root=root)
    for cv_json in sorted(root.rglob("cv.json")):
        data = _read_json(cv_json)
        if isinstance(data, dict) and data.get("schema") == schemas.CV:
            exp.cv_dirs[cv_json.parent] = data
    for run_dir in runs_under(root):
        result = _read_json(run_dir.result)
        if not isinstance(result, dict) or result.get("schema") != schemas.TRAIN_RESULT:
            continue
        run = run_dir.path
        config = _read_json(run_dir.config) or {}
        cv_dir = run.parent if run.parent in exp.cv_dirs else None
        exp.runs.append(RunInfo(path=run, result=result, config=config, cv_dir=cv_dir))
    for png in sorted(root.rglob("*.png")):
        if "nodules" in png.relative_to(root).parts:
            continue
        found = _caption(png)
        order, caption = found if found else (99, "other figure")
        exp.figures.append(Figure(png, order, f"{caption} ({png.relative_to(root)})"))
    exp.figures.sort(key=lambda f: (f.order, str(f.path)))
    for dbi_json in sorted(root.rglob("dbi.json")):
        rows = _read_json(dbi_json)
        if isinstance(rows, list):
            exp.dbi.append((dbi_json, rows))
    for ablation_json in sorted(root.rglob("ablation.json")):
        data = _read_json(ablation_json)
        if isinstance(data, dict) and data.get("schema") == schemas.ABLATION:
            exp.ablations.append((ablation_json, data))
    if not exp.runs:
        raise FileNotFoundError(f"{root}: no finished training run (result.json) in or under it")
    return exp
