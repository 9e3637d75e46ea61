"""Fixtures of the zoo tests: a tiny bundle built into a temporary models root, and the tiny LUNA16 tree
of the predict tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def luna(tmp_path_factory: pytest.TempPathFactory, helpers):
    """``(tree, None)``: the synthetic LUNA16 tree."""
    tree = helpers.luna_synth().make_tree(tmp_path_factory.mktemp("zoo_luna") / "luna")
    return tree, None


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, helpers) -> dict:
    """``voi3d-default`` built with a tiny config on tiny synthetic crops, with a 2-fold cv of the same."""
    from naslung.fingerprint import load_dataset
    from naslung.train.cv import run_cv
    from naslung.zoo.build import build_bundle
    from naslung.zoo.registry import recipe

    tmp = tmp_path_factory.mktemp("zoo")
    data = helpers.synth().write_synthetic(tmp / "tiny.h5", n=64, folds=4, seed=3)
    dataset = load_dataset(data)
    config = helpers.tiny_config()
    cv_dir = tmp / "cv"
    run_cv(dataset, config, [1, 2], cv_dir, source=str(data))
    root = tmp / "models"
    rec = recipe("voi3d-default")
    report = build_bundle(rec, dataset, [(rec.name, config)], command="naslung models build test",
                          prepare_command="naslung data prepare (synthetic)", source=str(data), cv=cv_dir,
                          root=root)
    return {"root": root, "report": report, "dataset": dataset, "config": config, "data": data,
            "cv": cv_dir, "tmp": tmp}
