"""A finished training run, loaded for inference: its model, its test fold and its crop settings.

A run folder is what ``naslung train --out`` writes (``config.json``, ``best.pt``, ``result.json``,
``predictions.csv``); a cv folder holds one run per test fold in ``fold_<K>``. The weights are rebuilt by
:func:`naslung.train.checkpoint.load_model` (no second copy of the loading logic here); this module only
adds what inference needs beside them: which crops the model was trained on (side, margin, spacing,
window, 2-D or 3-D), so that new crops are cut the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class CropSettings:
    """How the training crops were cut (``naslung data prepare`` options).

    Attributes:
        size: model input side (voxels).
        margin: stored context on each side; a stored crop has side ``size + 2 * margin``.
        dims: 3 (cubes) or 2 (axial slices).
        spacing: isotropic voxel size in mm, or None when the dataset file is gone.
        window: HU window ``(lo, hi)``, or None when the dataset file is gone.
        source: the dataset file the run was trained on.
    """

    size: int
    margin: int
    dims: int
    spacing: float | None = None
    window: tuple[float, float] | None = None
    source: str | None = None

    @property
    def side(self) -> int:
        return self.size + 2 * self.margin

    def key(self) -> dict[str, Any]:
        """The settings that must agree between models of one ensemble."""
        return {"size": self.size, "dims": self.dims, "spacing": self.spacing, "window": self.window}


@dataclass
class RunModel:
    """A loaded run: the model (CPU, eval mode) and what describes it."""

    path: Path
    model: nn.Module
    test_fold: int | None
    spec: str
    loss: str | None
    crop: CropSettings
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # how reports name it (a bundled model's ``NAME/member``); default its path
    #: every fold whose nodules trained or validated it, when known as such (a bundled model's card); None:
    #: a run folder, which trained on every fold but its ``test_fold``
    trained_folds: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return self.label or str(self.path)


def resolve_run(path: str | Path, fold: int | None = None) -> Path:
    """The run folder of ``path``: itself, or ``path/fold_<fold>`` of a cv folder.

    Raises ``FileNotFoundError`` naming the folder when neither holds a finished run.
    """
    from naslung.train.rundir import run_for_fold

    return run_for_fold(path, fold).path


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run folder; ``FileNotFoundError``/``ValueError`` naming the file."""
    from naslung.train.rundir import RunDir

    return RunDir(run_dir).read_config()


def crop_settings(run_dir: str | Path, config: dict[str, Any] | None = None) -> CropSettings:
    """The crop settings of a run, from its ``config.json`` and, for spacing and window, the dataset file
    it names (``config.json`` does not record them; when that file is gone they are None)."""
    config = config if config is not None else read_run_config(run_dir)
    ds = config.get("dataset") or {}
    model_config = config.get("model_config") or {}
    try:
        size, margin = int(ds["size"]), int(ds.get("margin") or 0)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{Path(run_dir) / 'config.json'}: no dataset size recorded") from None
    dims = int(ds.get("spatial_dims") or model_config.get("spatial_dims") or 3)
    spacing = window = None
    source = ds.get("source")
    if source and Path(source).is_file():
        from naslung.data.dataset import read_attrs

        try:
            attrs = read_attrs(source)
        except (OSError, ValueError):
            attrs = {}
        if attrs.get("spacing_mm") is not None:
            spacing = float(attrs["spacing_mm"])
        if attrs.get("window") is not None:
            lo, hi = attrs["window"]
            window = (float(lo), float(hi))
    return CropSettings(size=size, margin=margin, dims=dims, spacing=spacing, window=window, source=source)


def load_run_model(run_dir: str | Path, fold: int | None = None) -> RunModel:
    """Load a finished run (or ``fold_<fold>`` of a cv folder) for inference: best checkpoint, CPU, eval.

    Raises ``FileNotFoundError`` / ``ValueError`` (``CheckpointError``) naming the folder or file.
    """
    from naslung.train.checkpoint import load_model

    path = resolve_run(run_dir, fold)
    config = read_run_config(path)
    model = load_model(path)
    train_config = config.get("config") or {}
    return RunModel(path=path, model=model, test_fold=config.get("test_fold"),
                    spec=str(train_config.get("arch", getattr(model, "spec", "?"))),
                    loss=train_config.get("loss"), crop=crop_settings(path, config), config=config)
