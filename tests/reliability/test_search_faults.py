"""Search faults: options and data checked before the first trial, all-failed exits non-zero, failed trials
are retried on --resume without consuming the budget; non-finite training stops at the first bad loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from naslung.fingerprint import load_dataset
from naslung.models.spec import ArchSpec
from naslung.search import records as rec
from naslung.search.config import SearchConfig
from naslung.search.objective import SyntheticEvaluator
from naslung.search.runner import SearchFailedError, run_search
from naslung.train.config import TrainConfig
from naslung.train.engine import fit
from naslung.train.guards import NonFiniteLossError

from .runtime_support import TINY, write_tiny

SMALL = {"channels": (4, 8), "depth_range": (3, 4), "latency_samples": 6}


@dataclass
class Broken(SyntheticEvaluator):
    """Fails every candidate whose spec is in ``bad`` (all of them when ``bad`` is None)."""

    bad: tuple[str, ...] | None = None

    def __call__(self, spec: ArchSpec, seed: int) -> dict:
        if self.bad is None or str(spec) in self.bad:
            raise RuntimeError("boom")
        return super().__call__(spec, seed)


def test_every_trial_failing_raises(tmp_path: Path) -> None:
    with pytest.raises(SearchFailedError, match="failed"):
        run_search(SearchConfig.resolve(out=str(tmp_path), budget_trials=2, **SMALL), Broken())
    # failures do not consume the budget of 2; the third failure in a row at the start ends the search
    assert [r["status"] for r in rec.read_trials(tmp_path)] == ["error"] * 3


def test_failed_trials_retried_on_resume_and_not_counted(tmp_path: Path) -> None:
    first = run_search(SearchConfig.resolve(out=str(tmp_path / "s"), budget_trials=3, **SMALL),
                       SyntheticEvaluator())
    victim = first.records[1]["spec"]
    # the same search where that candidate fails: the budget still buys 3 trained candidates
    out = tmp_path / "f"
    res = run_search(SearchConfig.resolve(out=str(out), budget_trials=3, **SMALL), Broken(bad=(victim,)))
    assert len(res.state.trained) == 3
    assert [r["spec"] for r in res.records if r["status"] == "error"] == [victim]
    # --resume with a larger budget trains the failed candidate again, first
    bigger = SearchConfig.resolve(out=str(out), budget_trials=4, **SMALL)
    again = run_search(bigger, SyntheticEvaluator(), resume=True)
    new = again.records[len(res.records):]
    assert [r["spec"] for r in new] == [victim] and new[0]["status"] == "ok"
    assert len(again.state.trained) == 4 and not again.state.failed


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"num_threads": 0}, "num_threads"),
        ({"num_threads": -2}, "num_threads"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu"}, "unknown device"),
        ({"exclude_folds": (3, 11)}, "outside"),
        ({"latency_samples": 3}, "latency_samples"),
    ],
)
def test_bad_options_refused_at_once(tmp_path: Path, kw: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        SearchConfig.resolve(out=str(tmp_path), **kw)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [("no-labels", "labels"), ("all-excluded", "outside the excluded folds"), ("cuda", "CUDA")],
)
def test_data_and_device_checked_before_the_first_trial(tmp_path: Path, case: str, fragment: str) -> None:
    import torch

    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = write_tiny(tmp_path / "d.h5", drop=("labels",) if case == "no-labels" else ())
    kw = {"exclude_folds": tuple(range(10))} if case == "all-excluded" else {}
    kw |= {"device": "cuda"} if case == "cuda" else {}
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=fragment):
        run_search(SearchConfig.resolve(out=str(out), data=str(data), budget_trials=2, **SMALL, **kw))
    assert not (out / rec.TRIALS).exists() and not (out / rec.CONFIG).exists()


def test_non_finite_loss_stops_at_once(tmp_path: Path) -> None:
    flat = load_dataset(write_tiny(tmp_path / "flat.h5"))
    flat.images[:] = np.nan  # what a window [0, 0] gave before datasets refused it: 0/0 inputs
    config = TrainConfig(arch=TINY, epochs=3, batch_size=16, device="cpu", num_threads=1)
    with pytest.raises(NonFiniteLossError, match="epoch 1, batch 1"):
        fit(flat, config, test_fold=1, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "result.json").exists()
    good = load_dataset(write_tiny(tmp_path / "good.h5"))
    huge = config.replace(lr=1e30, epochs=2, loss="softmax")
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, batch \d+") as info:
        fit(good, huge, test_fold=1)
    assert info.value.epoch is not None and not np.isfinite(info.value.value)
