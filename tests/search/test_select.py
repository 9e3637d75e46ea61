"""``search select``: the floor against members at the class prior, the noise-tie rule, old trial records.

The records are written here by hand (no training): the failure seen in the demo was a 4-channel trial at
the benign share of the inner validation split (sensitivity 0, AUC 0.41) that sat on the Pareto front only
because it was the fastest, and was selected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from naslung.cli.app import app
from naslung.search import records as rec
from naslung.search.config import SearchConfig
from naslung.search.objective import SyntheticEvaluator, score_ci_record, score_intervals
from naslung.search.pop import pareto_front
from naslung.search.runner import run_search
from naslung.search.select import MIN_AUC, check_selected, select, select_members, selection_from_dir

PRIOR_SPEC = "[4,4,[4],[4,4],[4,4,4]]"


def metrics(acc: float, sens: float, spec: float, auc: float) -> dict[str, float]:
    return {"accuracy": acc, "sensitivity": sens, "specificity": spec, "f1": acc, "auc": auc}


def trial(t: int, spec: str, score: float, latency: float, params: int, vm: dict[str, float],
          ci: tuple[float, float] | None = None, **extra: Any) -> dict[str, Any]:
    score_ci = None if ci is None else {"lo": ci[0], "hi": ci[1], "level": 0.95, "resamples": 1000, "seed": 0}
    return rec.trial_record(trial=t, index=100 + t, spec=spec, status="ok", metric="accuracy", score=score,
                            score_ci=score_ci, val_metrics=vm, latency_ms=latency, params=params,
                            macs=params * 10, seed=t, **extra)


def prior_search() -> list[dict[str, Any]]:
    """Trial 0 is at the prior and the fastest; trial 1 is dominated by it alone."""
    return [
        trial(0, PRIOR_SPEC, 0.554, 1.0, 3_000, metrics(0.554, 0.0, 1.0, 0.41)),
        trial(1, "[4,4,[4],[8],[8]]", 0.55, 2.0, 6_000, metrics(0.55, 0.6, 0.7, 0.72)),
        trial(2, "[4,4,[8],[8],[16]]", 0.80, 3.0, 20_000, metrics(0.80, 0.75, 0.85, 0.90)),
        trial(3, "[4,4,[16],[32],[32]]", 0.83, 8.0, 200_000, metrics(0.83, 0.80, 0.86, 0.92)),
        trial(4, "[4,4,[8],[16],[16]]", 0.78, 5.0, 40_000, metrics(0.78, 0.70, 0.84, 0.88)),
    ]


def write_search(out: Path, records: list[dict[str, Any]]) -> Path:
    for r in records:
        rec.append_trial(out, r)
    rec.write_config(out, {"config": SearchConfig(out=str(out)).to_dict()})
    return out


def test_floor_drops_the_prior_trial_and_recomputes_the_front() -> None:
    records = prior_search()
    everything = pareto_front({r["index"]: (r["score"], r["latency_ms"]) for r in records})
    assert 100 in everything and 101 not in everything  # the premise: the prior trial is on the raw front

    sel = select(records, top=3)
    assert [c["spec"] for c in sel.chosen] == [
        "[4,4,[16],[32],[32]]", "[4,4,[8],[8],[16]]", "[4,4,[4],[8],[8]]"]
    assert all(c["on_front"] for c in sel.chosen)  # trial 1 joins the front once trial 0 is gone
    assert PRIOR_SPEC not in [c["spec"] for c in sel.chosen]
    assert [d["spec"] for d in sel.dropped] == [PRIOR_SPEC]
    assert sel.dropped[0]["reasons"] == ["AUC", "balanced accuracy"]
    (line,) = sel.messages()
    assert PRIOR_SPEC in line and "AUC 0.410" in line and "balanced accuracy 0.500" in line
    assert f"AUC >= {MIN_AUC:.2f}" in line and "balanced accuracy >= 0.60" in line
    # The floor can be lowered (0 turns it off): then the fast prior trial leads nothing but is on the front.
    off = select(records, top=5, min_auc=0, min_balanced_accuracy=0)
    assert not off.dropped and PRIOR_SPEC in [c["spec"] for c in off.chosen]


def test_a_learned_ranking_with_prior_level_calls_is_dropped_too() -> None:
    """AUC alone does not pass: a model that ranks well but calls everything benign is a useless voter."""
    records = [trial(0, PRIOR_SPEC, 0.554, 1.0, 3_000, metrics(0.554, 0.0, 1.0, 0.91)),
               trial(1, "[4,4,[8],[8],[16]]", 0.80, 3.0, 20_000, metrics(0.80, 0.75, 0.85, 0.90)),
               trial(2, "[4,4,[8],[8],[8]]", 0.62, 2.0, 10_000, metrics(0.62, 0.7, 0.6, 0.55))]
    sel = select(records, top=3)
    assert [d["reasons"] for d in sel.dropped] == [["balanced accuracy"], ["AUC"]]
    assert [c["spec"] for c in sel.chosen] == ["[4,4,[8],[8],[16]]"]


def test_too_few_pass_selects_fewer_and_says_so(tmp_path: Path) -> None:
    records = prior_search()
    sel = select(records, top=5)
    assert len(sel.chosen) == 4 and sel.short
    assert "only 4 of 5 trained trials pass the floor" in sel.messages()[-1]
    assert "not --top 5" in sel.messages()[-1]
    # None passing raises, naming what was dropped; nothing is filled in from below the floor.
    with pytest.raises(ValueError, match=r"none of the 1 trained trials passes the floor.*AUC 0\.410"):
        select_members(records[:1], top=3)
    check_selected(sel)  # some passed: no error


def test_cli_select_prints_what_it_dropped(tmp_path: Path) -> None:
    out = write_search(tmp_path / "s", prior_search())
    runner = CliRunner()
    res = runner.invoke(app, ["search", "select", "--out", str(out), "--top", "3"])
    assert res.exit_code == 0, res.output
    assert f"dropped trial 0 {PRIOR_SPEC}: inner-validation AUC 0.410" in res.output
    members = json.loads((out / "members.json").read_text())
    assert [m["record"]["spec"] for m in members["members"]] == [
        "[4,4,[16],[32],[32]]", "[4,4,[8],[8],[16]]", "[4,4,[4],[8],[8]]"]
    assert members["selection"]["min_auc"] == MIN_AUC
    assert [d["spec"] for d in members["selection"]["dropped"]] == [PRIOR_SPEC]
    # --top larger than what passes: fewer members, said on stderr.
    res = runner.invoke(app, ["search", "select", "--out", str(out), "--top", "9", "--json"])
    assert res.exit_code == 0, res.output
    assert "only 4 of 5 trained trials pass the floor" in res.stderr
    assert len(json.loads(res.stdout)) == 4
    # A floor that nothing passes: a one-line error, exit 2.
    res = runner.invoke(app, ["search", "select", "--out", str(out), "--min-auc", "0.99"])
    assert res.exit_code == 2 and "none of the 5 trained trials passes the floor" in res.output
    res = runner.invoke(app, ["search", "select", "--out", str(out), "--min-auc", "1.5"])
    assert res.exit_code == 2 and "--min-auc must lie in [0, 1]" in res.output


def test_scores_inside_the_noise_tie_and_go_to_fewer_parameters() -> None:
    good = metrics(0.8, 0.8, 0.8, 0.9)
    big = trial(0, "[4,4,[32],[32],[32]]", 0.82, 9.0, 300_000, good, ci=(0.74, 0.90))
    small = trial(1, "[4,4,[8],[8],[8]]", 0.80, 4.0, 20_000, good, ci=(0.71, 0.88))
    tiny = trial(2, "[4,4,[4],[4],[4]]", 0.70, 2.0, 5_000, good, ci=(0.60, 0.79))
    sel = select([big, small, tiny], top=3)
    assert all(c["on_front"] for c in sel.chosen)
    # 0.80 lies inside big's interval [0.74, 0.90]: a tie, so fewer parameters first; 0.70 does not.
    assert [c["spec"] for c in sel.chosen] == [small["spec"], big["spec"], tiny["spec"]]
    assert [c["tier"] for c in sel.chosen] == [1, 1, 2]
    assert (sel.chosen[0]["score_lo"], sel.chosen[0]["score_hi"]) == (0.71, 0.88)
    # Without intervals (older searches): exact ties only, best score first, as before.
    plain = [dict(r, score_ci=None) for r in (big, small, tiny)]
    assert [c["spec"] for c in select(plain, top=3).chosen] == [big["spec"], small["spec"], tiny["spec"]]
    # Off the front the trade-off ranks, with the same noise band: both slow trials below tie on params.
    slow_a = trial(3, "[4,4,[16],[16],[32]]", 0.69, 20.0, 90_000, good, ci=(0.60, 0.78))
    slow_b = trial(4, "[4,4,[8],[16],[16]]", 0.66, 21.0, 40_000, good, ci=(0.57, 0.75))
    rest = select([big, small, tiny, slow_a, slow_b], top=5).chosen[3:]
    assert [c["spec"] for c in rest] == [slow_b["spec"], slow_a["spec"]] and not rest[0]["on_front"]


def test_old_trial_records_without_the_interval_still_read(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    lines = []
    for r in prior_search():
        old = {k: v for k, v in r.items() if k != "score_ci"}
        lines.append(json.dumps(old))
    (out / rec.TRIALS).write_text("\n".join(lines) + "\n")
    records = rec.read_trials(out)
    assert all("score_ci" in r and r["score_ci"] is None for r in records)
    sel = selection_from_dir(out, top=3)
    assert [c["score_ci"] for c in sel.chosen] == [None, None, None]
    assert [c["score_lo"] for c in sel.chosen] == [c["score"] for c in sel.chosen]
    assert [d["spec"] for d in sel.dropped] == [PRIOR_SPEC]


def test_score_intervals_are_seeded_bootstrap_percentiles() -> None:
    rng = np.random.default_rng(0)
    y = (np.arange(75) < 33).astype(np.int64)
    prob = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.3, y.size), 0, 1)
    groups = np.array([f"s{i}" for i in range(y.size)])
    first, again = score_intervals(y, prob, groups), score_intervals(y, prob, groups)
    assert first == again  # fixed seed
    acc = float(np.mean((prob >= 0.5) == y))
    lo, hi = first["accuracy"]["lo"], first["accuracy"]["hi"]
    assert lo < acc < hi and 0.1 < hi - lo < 0.3  # ~ +-2 binomial standard errors at n = 75
    entry = score_ci_record(first, "accuracy")
    assert entry is not None and entry["lo"] == lo and entry["resamples"] == 1000
    assert score_ci_record(first, "nope") is None and score_ci_record(None, "accuracy") is None


class _WithIntervals(SyntheticEvaluator):
    def __call__(self, spec: Any, seed: int) -> dict[str, Any]:
        out = super().__call__(spec, seed)
        acc = out["metrics"]["accuracy"]
        return {**out, "metrics_ci": {"accuracy": {"lo": acc - 0.05, "hi": acc + 0.04}}}


def test_search_records_store_the_objective_interval(tmp_path: Path) -> None:
    from naslung.search.config import LatencyConfig, SpaceConfig

    cfg = SearchConfig(out=str(tmp_path), space=SpaceConfig(channels=(4, 8), depth_range=(3, 4)),
                       budget_trials=2, latency=LatencyConfig(samples=8))
    res = run_search(cfg, _WithIntervals())
    for r in res.records:
        assert tuple(r) == rec.TRIAL_KEYS
        assert r["score_ci"]["lo"] == pytest.approx(r["score"] - 0.05)
        assert r["score_ci"]["hi"] == pytest.approx(r["score"] + 0.04) and r["score_ci"]["level"] == 0.95
