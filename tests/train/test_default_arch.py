"""The default architecture follows the data's dimensionality (``TrainConfig.resolve(spatial_dims=...)``)
and never overrides an architecture the user or a saved config gave."""

from __future__ import annotations

import pytest

from naslung.train.config import DEFAULT_ARCHS, TrainConfig


@pytest.mark.parametrize("dims", [2, 3])
def test_unset_arch_takes_the_default_of_the_data_dims(dims):
    assert TrainConfig.resolve(spatial_dims=dims).arch == DEFAULT_ARCHS[dims]


def test_given_or_saved_arch_wins_over_the_dims_default():
    arch = "[4,4,[8],[8],[8]]"
    assert TrainConfig.resolve(spatial_dims=2, arch=arch).arch == arch
    assert TrainConfig.resolve({"arch": arch}, spatial_dims=2).arch == arch


def test_without_dims_the_dataclass_default_is_the_3d_one():
    assert TrainConfig.resolve().arch == TrainConfig().arch == DEFAULT_ARCHS[3]


def test_unknown_dims_is_refused():
    with pytest.raises(ValueError, match="spatial_dims"):
        TrainConfig.resolve(spatial_dims=4)


def test_train_options_read_the_dims_from_the_dataset(tmp_path):
    import numpy as np

    from naslung.cli.train_options import TrainOptions
    from naslung.data.dataset import write_dataset

    n = 4
    arrays = {"images": np.zeros((n, 8, 8), np.int16), "labels": np.array([0, 1, 0, 1]),
              "fold": np.zeros(n), "seriesuid": np.array(["a"] * n), "nodule_id": np.arange(n).astype(str),
              "world_center": np.zeros((n, 3)), "diameter_mm": np.ones(n), "malignancy_mean": np.ones(n),
              "malignancy_median": np.ones(n), "ratings": np.zeros((n, 0)), "padded": np.zeros(n, bool)}
    path = write_dataset(tmp_path / "d2.h5", arrays, {"window": [-1000, 400], "size": 8, "margin": 0})
    assert TrainOptions().resolve(path).arch == DEFAULT_ARCHS[2]
    assert TrainOptions(arch="[4,4,[8],[8],[8]]").resolve(path).arch == "[4,4,[8],[8],[8]]"
