import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from naslung.train.baselines import crop_stats_features, fit_baseline
from naslung.train.config import TrainConfig
from naslung.train.engine import data_split

from .conftest import synthetic_dataset


@pytest.fixture(scope="module")
def ds():
    return synthetic_dataset(n=160, folds=4, seed=3)


def test_diameter_baseline_uses_the_cnn_split(ds):
    split = data_split(ds, TrainConfig(arch="[4,4,[4],[4],[8]]", seed=7), test_fold=1)
    base = fit_baseline("diameter", ds, split)
    assert base.test.nodule_id.tolist() == ds.nodule_id[split.test].tolist()
    assert base.val.nodule_id.tolist() == ds.nodule_id[split.val].tolist()
    # Fitted on the inner training split only: the same as a model fitted by hand on those rows.
    ref = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        ds.diameter_mm[split.train].reshape(-1, 1), ds.labels[split.train])
    assert np.allclose(base.test.prob, ref.predict_proba(ds.diameter_mm[split.test].reshape(-1, 1))[:, 1])
    assert base.test.metrics()["accuracy"] > 0.75  # diameter separates the synthetic classes fairly well


def test_crop_stats_baseline(ds):
    feats = crop_stats_features(ds)
    assert feats.shape == (len(ds), 5) and np.isfinite(feats).all()
    split = data_split(ds, TrainConfig(arch="[4,4,[4],[4],[8]]"), test_fold=2)
    base = fit_baseline("crop-stats", ds, split, seed=0)
    assert base.test.metrics()["accuracy"] > 0.9


def test_unknown_baseline(ds):
    split = data_split(ds, TrainConfig(arch="[4,4,[4],[4],[8]]"), test_fold=2)
    with pytest.raises(ValueError, match="diameter"):
        fit_baseline("svm", ds, split)
