"""The status file of a resumable multi-stage job (``reproduce.json``): which stage is done, with what.

Schema ``naslung-reproduce`` v1::

    {"schema": "naslung-reproduce", "schema_version": 1, "updated": "<ISO time>",
     "job": {<what the job was started with: data, fingerprint, budget, folds, ...>},
     "stages": {"<stage>": {"status": "running" | "done", "key": "<sha256 of the stage's inputs>",
                            "started": "...", "finished": "...", "seconds": 12.3, "result": {...}}},
     "estimates": {"<stage>": "<remaining time, or unknown>"}}

A stage is skipped on a rerun when it is ``done`` with the same key. The key hashes the stage's inputs and
the key of the stage before it, so a changed input reruns that stage and every later one; the library
functions each stage calls resume on their own (finished trials and runs are read back), so a rerun
repeats no finished training. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from naslung import schemas

SCHEMA = schemas.REPRODUCE
SCHEMA_VERSION = 1


def stage_key(inputs: Any, previous: str | None = None) -> str:
    """SHA-256 of the stage's JSON-able ``inputs`` chained to the previous stage's key."""
    text = json.dumps({"inputs": inputs, "previous": previous}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StatusFile:
    """Reads, updates and atomically rewrites one status file."""

    def __init__(self, path: str | Path, job: dict[str, Any]) -> None:
        from naslung.atomic import read_json

        self.path = Path(path)
        #: The job of an earlier run of this folder ({} when new).
        self.saved_job: dict[str, Any] = {}
        self.data: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "job": job,
                                     "stages": {}, "estimates": {}}
        if self.path.is_file():
            saved = read_json(self.path, "status file")
            if not isinstance(saved, dict) or saved.get("schema") != SCHEMA:
                raise ValueError(f"{self.path}: not a naslung status file ({SCHEMA}); use another --out")
            if int(saved.get("schema_version", 0)) > SCHEMA_VERSION:
                raise ValueError(f"{self.path}: status file version {saved.get('schema_version')} is newer "
                                 "than this naslung")
            self.data["stages"] = dict(saved.get("stages") or {})
            self.saved_job = dict(saved.get("job") or {})
        self._t0: dict[str, float] = {}

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.data["stages"].get(name) or {})

    def done(self, name: str, key: str) -> bool:
        """The stage finished with these inputs."""
        entry = self.stage(name)
        return entry.get("status") == "done" and entry.get("key") == key

    def result(self, name: str) -> Any:
        return self.stage(name).get("result")

    def seconds(self, name: str) -> float | None:
        """Measured seconds of a stage that ran to the end at least once."""
        value = self.stage(name).get("seconds")
        return float(value) if isinstance(value, (int, float)) else None

    def start(self, name: str, key: str) -> None:
        previous = self.stage(name)
        entry = {"status": "running", "key": key, "started": _now()}
        if previous.get("seconds") is not None:  # the last measured duration, for the next estimate
            entry["seconds"] = previous["seconds"]
        self.data["stages"][name] = entry
        self._t0[name] = time.perf_counter()
        self.save()

    def finish(self, name: str, key: str, result: Any = None) -> None:
        entry = self.stage(name)
        seconds = time.perf_counter() - self._t0.pop(name, time.perf_counter())
        self.data["stages"][name] = {**entry, "status": "done", "key": key, "finished": _now(),
                                     "seconds": seconds, "result": result}
        self.save()

    def set_estimates(self, estimates: dict[str, str]) -> None:
        self.data["estimates"] = dict(estimates)
        self.save()

    def save(self) -> None:
        from naslung.atomic import write_json_atomic

        self.data["updated"] = _now()
        write_json_atomic(self.path, self.data)
