"""Fixtures of the predict tests: two tiny runs and a tiny LUNA16 tree prepared with their crop settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _helpers():
    if "explain_helpers" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "explain" / "explain_helpers.py"
        spec = importlib.util.spec_from_file_location("explain_helpers", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["explain_helpers"] = module
        spec.loader.exec_module(module)
    return sys.modules["explain_helpers"]


@pytest.fixture(scope="session")
def helpers():
    return _helpers()


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _helpers().make_runs(tmp_path_factory.mktemp("predict_runs"))


@pytest.fixture(scope="session")
def luna(tmp_path_factory: pytest.TempPathFactory):
    """``(tree, dataset_path)``: the synthetic LUNA16 tree and its crops at the runs' settings."""
    from naslung.data.prepare import PrepareConfig, prepare_dataset

    root = tmp_path_factory.mktemp("predict_luna")
    tree = _helpers().luna_synth().make_tree(root / "luna")
    out = root / "crops.h5"
    prepare_dataset(PrepareConfig(luna_dir=tree.root, out=out, size=16, margin=2, window=(-1000.0, 400.0)))
    return tree, out
