"""Latency model: fit, held-out error, stratified calibration sample, cache."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.models.machine import cpu_isa
from naslung.search.costs import space_costs
from naslung.search.latency_model import (
    LatencyModel,
    cached_model,
    calibrate,
    calibration_sample,
    error_metrics,
    fit_latency_model,
    host_context,
)
from naslung.search.space import SearchSpace


@pytest.fixture(scope="module")
def costs(small_space: SearchSpace) -> dict[str, np.ndarray]:
    return space_costs(small_space)


def test_linear_model_recovers_an_exact_linear_latency(costs: dict[str, np.ndarray]) -> None:
    truth = 0.3 + 2e-8 * costs["macs"] + 1e-7 * costs["activation_bytes"] + 0.1 * costs["depth"]
    idx = calibration_sample(costs, 40, seed=0)
    model = fit_latency_model({k: v[idx] for k, v in costs.items()}, truth[idx])
    assert model.metrics["mape"] < 1e-6 and model.metrics["r2"] > 0.999999
    assert np.allclose(model.predict(costs), truth, rtol=1e-6)


def test_noisy_fit_reports_held_out_error(costs: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    truth = 1.0 + 3e-8 * costs["macs"]
    idx = calibration_sample(costs, 40, seed=1)
    y = truth[idx] * np.exp(rng.normal(0, 0.1, len(idx)))
    for kind in ("linear", "loglinear"):
        model = fit_latency_model({k: v[idx] for k, v in costs.items()}, y, kind=kind)
        assert 0.02 < model.metrics["mape"] < 0.4 and model.metrics["n"] == 10
        assert model.metrics["train_n"] == 40
    # non-negative coefficients keep the linear prediction monotone in every feature
    assert min(fit_latency_model({k: v[idx] for k, v in costs.items()}, y).coef) >= 0


def test_calibration_sample_spans_the_macs_range(costs: dict[str, np.ndarray]) -> None:
    idx = calibration_sample(costs, 20, seed=0)
    assert len(set(idx.tolist())) == 20
    macs = costs["macs"]
    assert macs[idx].min() <= np.quantile(macs, 0.05) and macs[idx].max() >= np.quantile(macs, 0.95)
    assert (calibration_sample(costs, 20, seed=0) == idx).all()


def test_cache_round_trip(tmp_path, costs: dict[str, np.ndarray]) -> None:
    calls = []

    def measure(i: int) -> float:
        calls.append(i)
        return 1.0 + 1e-8 * float(costs["macs"][i])

    context = {"device": "test", "threads": 1, "size": 32}
    build = lambda: calibrate(costs, measure, n=12, context=context)  # noqa: E731
    first = cached_model(context, build, cache=tmp_path)
    assert len(calls) == 12 and len(first.samples) == 12
    second = cached_model(context, build, cache=tmp_path)
    assert len(calls) == 12 and second.coef == first.coef  # read from the cache, nothing measured
    cached_model({**context, "threads": 2}, build, cache=tmp_path)
    assert len(calls) == 24  # another context is another model
    again = LatencyModel.load(next(tmp_path.glob("model-*.json")))
    assert again.kind == "linear"
    # the key holds the host CPU and its instruction set; the load at calibration is recorded
    assert first.context == {**host_context(), **context} and first.context["host_isa"] == cpu_isa()
    assert set(first.measured) == {"load_1min_before", "load_1min_after", "measured_at"}
    # refresh calibrates again and replaces the stored model
    refreshed = cached_model(context, build, cache=tmp_path, refresh=True)
    assert len(calls) == 36 and refreshed.measured["measured_at"] > first.measured["measured_at"]
    assert cached_model(context, build, cache=tmp_path).measured == refreshed.measured
    assert len(calls) == 36 and len(list(tmp_path.glob("model-*.json"))) == 2


def test_errors() -> None:
    assert error_metrics(np.array([1.0, 2.0]), np.array([1.0, 2.0]))["mape"] == 0.0
    with pytest.raises(ValueError, match="unknown latency model kind"):
        fit_latency_model({"macs": np.ones(9)}, np.ones(9), kind="cubic", features=("macs",))
    with pytest.raises(ValueError, match="positive latency samples"):
        fit_latency_model({"macs": np.ones(2)}, np.ones(2), features=("macs",))
