"""Resuming a search folder: the settings that decide the numbers must match, and past trials are replayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naslung.search import records as rec
from naslung.search.config import SearchConfig
from naslung.search.pop import PopState


def saved_config(out: Path) -> SearchConfig:
    """The :class:`SearchConfig` recorded in ``out/search_config.json`` (nested or the older flat form)."""
    recorded = rec.read_config(out)
    try:
        return SearchConfig.from_dict(recorded.get("config") or {})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{out / rec.CONFIG}: unreadable search settings ({exc})") from None


def check_resume(out: Path, config: SearchConfig, fingerprint: str | None) -> None:
    """Refuse to resume ``out`` with another dataset or with changed :meth:`SearchConfig.identity` settings.

    ``config.data`` must already be resolved (the folder records the absolute path).
    """
    from naslung.fingerprint import check_same

    if fingerprint is not None:
        recorded = rec.read_config(out)
        check_same((recorded.get("dataset") or {}).get("fingerprint"), fingerprint, out, "resume the search")
    saved, now = saved_config(out).identity(), config.identity()
    differ = [k for k in dict.fromkeys([*saved, *now]) if saved.get(k) != now.get(k)]
    if differ:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"{out}: cannot resume with changed settings ({detail}); use another --out")


def replay(state: PopState, existing: list[dict[str, Any]]) -> list[int]:
    """Replay the trial records of an earlier run into ``state``; returns the failed candidates to retry.

    Records replay in completion order, so the front history (hence the patience counter) is the same as
    an uninterrupted search's. Candidates that failed and never trained successfully are trained again,
    first, unless pruning or the latency budget has ruled them out since.
    """
    space = state.space
    for r in existing:
        state.complete(
            space.index(r["spec"]), r["score"] if r["status"] == "ok" else None, r["latency_ms"], prune=False
        )
    trained_ok = {space.index(r["spec"]) for r in existing if r["status"] == "ok"}
    retry = list(dict.fromkeys(space.index(r["spec"]) for r in existing if r["status"] != "ok"))
    retry = [i for i in retry if i not in trained_ok]
    state.failed.difference_update(retry)
    state.reprune()
    state.n_suggested = len(existing)
    return [i for i in retry if not state.pruned[i] and state.in_budget[i]]
