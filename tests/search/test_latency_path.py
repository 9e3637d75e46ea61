"""The search times candidates on the serving path (BN folded) by default; old folders keep the eager path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from naslung.models import fast, latency
from naslung.search import records as rec
from naslung.search.config import LatencyConfig, SearchConfig, SpaceConfig
from naslung.search.objective import SyntheticEvaluator, TrainEvaluator
from naslung.search.resume import saved_config
from naslung.search.runner import latency_context, run_search
from naslung.search.space import SearchSpace
from naslung.train.config import TrainConfig

from .conftest import SMALL


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``measure_latency`` call, which answers 1 ms without timing anything."""
    calls: list[dict[str, Any]] = []

    def fake(spec: Any, **kw: Any) -> dict[str, Any]:
        calls.append(kw)
        return {"median_ms": 1.0, "key": {"threads": kw["threads"]}}

    monkeypatch.setattr(latency, "measure_latency", fake)
    return calls


def _evaluator(latency: dict[str, Any]) -> TrainEvaluator:
    # size and spatial_dims given: no dataset file is read.
    return TrainEvaluator(data_path="unused.h5", train=TrainConfig(epochs=1), latency=latency, size=16,
                          spatial_dims=3)


def test_latency_path_defaults_to_folded_and_is_validated() -> None:
    assert LatencyConfig().path == "folded" and LatencyConfig().measure_options()["path"] == "folded"
    assert LatencyConfig(path="eager").measure_options()["path"] == "eager"
    with pytest.raises(ValueError, match="unknown latency_path 'onnx'; valid: eager, folded"):
        LatencyConfig(path="onnx")
    assert SearchConfig.resolve(out="s", latency_path="eager").latency.path == "eager"
    assert SearchConfig.resolve(out="s").latency.path == "folded"


@pytest.mark.parametrize(("latency", "want"), [
    (LatencyConfig().measure_options(), "folded"),
    ({}, "folded"),  # an evaluator built without latency options times the serving path too
    (LatencyConfig(path="eager").measure_options(), "eager"),
])
def test_the_evaluator_asks_for_the_configured_path(asked: list[dict[str, Any]], latency: dict[str, Any],
                                                     want: str) -> None:
    out = _evaluator(latency).measure(SearchSpace(**SMALL)[0])
    assert out["latency_ms"] == 1.0 and [a["path"] for a in asked] == [want]


def test_measure_latency_times_the_folded_model_on_the_folded_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = fast.eval_model

    def spy(model: Any, channels_last: bool = False) -> Any:
        calls.append(channels_last)
        return real(model, channels_last=channels_last)

    monkeypatch.setattr(fast, "eval_model", spy)
    args = {"input_size": 16, "threads": 1, "warmup": 0, "repeats": 1, "use_cache": False}
    latency.measure_latency("[4,4,[4],[4],[8]]", path="eager", **args)
    assert calls == []
    res = latency.measure_latency("[4,4,[4],[4],[8]]", path="folded", **args)
    # a 3-D model is served channels-last (serving_channels_last)
    assert calls == [True] and res["key"]["path"] == "folded"


def test_the_latency_model_cache_is_kept_apart_per_path() -> None:
    space = SearchSpace(**SMALL)
    configs = [SearchConfig(out="s", latency=LatencyConfig(path=p)) for p in ("eager", "folded")]
    contexts = [latency_context(c, SyntheticEvaluator(), space) for c in configs]
    assert [c["path"] for c in contexts] == ["eager", "folded"]


def _drop_latency_path(out: Path) -> None:
    """Rewrite a search folder's config as naslung wrote it before the latency path existed."""
    saved = rec.read_config(out)
    del saved["config"]["latency"]["path"]
    rec.write_config(out, {k: v for k, v in saved.items() if k not in ("schema", "schema_version")})


def test_an_old_search_reads_as_eager_and_resumes_on_it(tmp_path: Path) -> None:
    out = tmp_path / "s"

    def config(trials: int) -> SearchConfig:
        return SearchConfig(out=str(out), space=SpaceConfig(**SMALL), latency=LatencyConfig(samples=6),
                            budget_trials=trials)

    run_search(config(2), SyntheticEvaluator())
    assert saved_config(out).latency.path == "folded"
    _drop_latency_path(out)
    assert "path" not in rec.read_config(out)["config"]["latency"]
    assert saved_config(out).latency.path == "eager"
    # Resuming with today's default (folded) does not complain; the folder goes on timing eagerly.
    result = run_search(config(3), SyntheticEvaluator(), resume=True)
    assert result.new_trials == 1 and result.config.latency.path == "eager"
    assert rec.read_config(out)["config"]["latency"]["path"] == "eager"


@pytest.mark.parametrize("kernel", [3, 7])
def test_candidates_are_timed_and_costed_with_the_cbam_kernel_they_train_with(asked: list[dict[str, Any]],
                                                                              kernel: int) -> None:
    evaluator = TrainEvaluator(data_path="unused.h5", train=TrainConfig(epochs=1, cbam_kernel=kernel),
                               latency={}, size=16, spatial_dims=3)
    evaluator.measure(SearchSpace(**SMALL)[0])
    assert asked[0]["cbam_kernel"] == kernel
    assert evaluator.options["cbam_kernel"] == kernel  # what space_costs and the latency context receive
