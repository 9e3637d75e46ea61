"""Shared by the explain/report/predict tests: tiny datasets and tiny trained runs (1 thread, seconds)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1]
TINY = "[4,4,[4],[4],[8]]"


def load_test_module(relative: str, name: str) -> ModuleType:
    """Import a helper module of another test folder by path (test folders are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def synth() -> ModuleType:
    """``tests/train/conftest.py``: ``synthetic_dataset`` and ``write_synthetic``."""
    return load_test_module("train/conftest.py", "naslung_test_train_synth")


def luna_synth() -> ModuleType:
    """``tests/data/luna_synth.py``: a tiny LUNA16 tree of ``.mhd`` scans with spheres."""
    return load_test_module("data/luna_synth.py", "naslung_test_luna_synth")


def tiny_config(**kw):
    from naslung.train.config import TrainConfig

    base = {"arch": TINY, "epochs": 2, "batch_size": 16, "lr": 3e-3, "device": "cpu", "num_threads": 1,
            "channels_last": False}
    return TrainConfig(**{**base, **kw})


def make_runs(root: Path, n: int = 64, folds: int = 4, test_fold: int = 0) -> dict[str, Path]:
    """A dataset file plus an A-Softmax and a Softmax run on it: ``{"data", "asoftmax", "softmax"}``."""
    from naslung.data.dataset import load_dataset
    from naslung.train.engine import fit

    data = synth().write_synthetic(root / "tiny.h5", n=n, folds=folds, seed=3)
    dataset = load_dataset(data)
    out = {"data": data}
    for loss in ("asoftmax", "softmax"):
        out[loss] = root / f"run_{loss}"
        fit(dataset, tiny_config(loss=loss), test_fold=test_fold, out_dir=out[loss], source=str(data))
    return out
