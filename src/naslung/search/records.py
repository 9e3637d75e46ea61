"""Files of a search folder (``--out DIR``); both executors write exactly these.

- ``trials.jsonl``: append-only, one record per finished trial (schema ``naslung-search-trial`` v1), in
  completion order. It is the single source of truth: ``--resume`` replays it.
- ``search_config.json``: the resolved configuration, the space and the provenance.
- ``latency_model.json``: the fitted latency model used for pruning (so a resumed search prunes identically).
- ``pareto.json``: the current front (measured latency) and the counts; rewritten after every trial.
- ``pareto.png``: Fig.-4-style plot (see :mod:`naslung.search.plot`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from naslung import schemas
from naslung.atomic import append_jsonl, read_json, read_jsonl, write_json_atomic

TRIALS = "trials.jsonl"
CONFIG = "search_config.json"
LATENCY_MODEL = "latency_model.json"
PARETO = "pareto.json"
PLOT = "pareto.png"
TRIAL_SCHEMA = schemas.SEARCH_TRIAL
CONFIG_SCHEMA = schemas.SEARCH_CONFIG
PARETO_SCHEMA = schemas.SEARCH_PARETO
SCHEMA_VERSION = 1
#: ``search_config.json``: 1 wrote the flat config, 2 the nested frozen :class:`SearchConfig` (both read).
CONFIG_SCHEMA_VERSION = 2

#: Keys every trial record carries (tests check both executors write the same set). ``score_ci`` (the
#: score's bootstrap interval on the inner validation split, :func:`naslung.search.objective.score_intervals`)
#: came later within schema v1: :func:`read_trials` gives older records ``None`` for every key they lack.
TRIAL_KEYS: tuple[str, ...] = (
    "schema",
    "schema_version",
    "trial",
    "index",
    "spec",
    "status",
    "error",
    "metric",
    "score",
    "score_ci",
    "val_metrics",
    "epochs",
    "epoch",
    "seed",
    "params",
    "macs",
    "activation_bytes",
    "latency_ms",
    "latency_pred_ms",
    "latency_device",
    "latency_threads",
    "wall_s",
    "train_seconds",
    "started",
    "finished",
    "executor",
    "front_changed",
    "pruned",
    "remaining",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def trial_record(**fields: Any) -> dict[str, Any]:
    """A trial record with every key of :data:`TRIAL_KEYS` (missing ones are ``None``)."""
    unknown = sorted(set(fields) - set(TRIAL_KEYS))
    if unknown:
        raise ValueError(f"unknown trial record keys {unknown}")
    rec = {key: fields.get(key) for key in TRIAL_KEYS}
    rec["schema"], rec["schema_version"] = TRIAL_SCHEMA, SCHEMA_VERSION
    return rec


def read_trials(out: str | Path) -> list[dict[str, Any]]:
    """The trial log of a search folder (empty when there is none); validates the schema.

    A key of :data:`TRIAL_KEYS` that an older record lacks reads as ``None``.
    """
    path = Path(out) / TRIALS
    records = read_jsonl(path)
    for i, rec in enumerate(records):
        if rec.get("schema") != TRIAL_SCHEMA:
            raise ValueError(f"{path}: line {i + 1} is not a search trial record")
        if int(rec.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ValueError(
                f"{path}: trial schema version {rec['schema_version']} is newer than this naslung"
            )
        for key in TRIAL_KEYS:
            rec.setdefault(key, None)
    return records


def repair_log(out: str | Path) -> int:
    """Drop a torn last line left by a kill (rewriting the log atomically); returns the records kept.

    Without this, the next append would follow the torn fragment and corrupt the log in its middle.
    """
    import json

    from naslung.atomic import write_text_atomic

    path = Path(out) / TRIALS
    if not path.exists():
        return 0
    text = path.read_text(encoding="utf-8")
    records = read_jsonl(path)
    clean = "".join(json.dumps(r, default=str) + "\n" for r in records)
    if clean != text:
        write_text_atomic(path, clean)
    return len(records)


def append_trial(out: str | Path, record: dict[str, Any]) -> None:
    append_jsonl(Path(out) / TRIALS, record)


def write_config(out: str | Path, config: dict[str, Any]) -> Path:
    return write_json_atomic(
        Path(out) / CONFIG, {"schema": CONFIG_SCHEMA, "schema_version": CONFIG_SCHEMA_VERSION, **config}
    )


def read_config(out: str | Path) -> dict[str, Any]:
    path = Path(out) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{out}: no {CONFIG}; is this a search folder?")
    data = read_json(path, "search configuration")
    if not isinstance(data, dict) or data.get("schema") != CONFIG_SCHEMA:
        raise ValueError(f"{path}: not a search configuration")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > CONFIG_SCHEMA_VERSION:
        raise ValueError(f"{path}: search configuration schema version {version!r} is newer than this "
                         f"naslung reads ({CONFIG_SCHEMA_VERSION}); upgrade naslung")
    return data


def check_search_folder(out: str | Path, test_fold: int | None) -> None:
    """:func:`naslung.protocol.check_test_fold_unseen` against the ``exclude_folds`` recorded in a search
    folder."""
    from naslung.protocol import check_test_fold_unseen

    config = read_config(Path(out)).get("config", {})
    check_test_fold_unseen(test_fold, config.get("exclude_folds") or (), where=f"search in {out}")


def write_pareto(out: str | Path, front: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """``pareto.json``: front members (by measured latency, ascending) and the search counts."""
    return write_json_atomic(
        Path(out) / PARETO,
        {
            "schema": PARETO_SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "updated": now_iso(),
            "objective": "maximise inner-validation score, minimise measured latency",
            "summary": summary,
            "front": front,
        },
    )
