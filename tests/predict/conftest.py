"""Fixtures of the predict tests: two tiny runs and a tiny LUNA16 tree prepared with their crop settings."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, helpers) -> dict[str, Path]:
    return helpers.make_runs(tmp_path_factory.mktemp("predict_runs"))


@pytest.fixture(scope="session")
def luna(tmp_path_factory: pytest.TempPathFactory, helpers):
    """``(tree, dataset_path)``: the synthetic LUNA16 tree and its crops at the runs' settings."""
    from naslung.data.prepare import PrepareConfig, prepare_dataset

    root = tmp_path_factory.mktemp("predict_luna")
    tree = helpers.luna_synth().make_tree(root / "luna")
    out = root / "crops.h5"
    prepare_dataset(PrepareConfig(luna_dir=tree.root, out=out, size=16, margin=2, window=(-1000.0, 400.0)))
    return tree, out
