"""``naslung predict --scans DIR --candidates CSV --out preds.csv``: every candidate of a whole study.

Scans: a LUNA16 tree (``subsetK/<seriesuid>.mhd``, :func:`naslung.data.luna16.discover_scans`) or any folder
of ``.mhd``/``.mha``/``.nii``/``.nii.gz``/``.nrrd`` files named ``<seriesuid>.<suffix>`` and DICOM series
folders (keyed by their SeriesInstanceUID), at any depth. Candidates: a ``seriesuid,coordX,coordY,coordZ``
table (LUNA16's ``candidates.csv``; other columns are ignored).

Output: ``seriesuid,coordX,coordY,coordZ,probability`` (the coordinates as written in the table), plus
``p_<member>`` per member and ``vote`` (the majority vote, :func:`naslung.ensemble.vote.majority_vote`) for
an ensemble, whose ``probability`` is the members' mean. Scans run one at a time in the order they first
appear in the table, rows in table order; each scan is read, checked
(:func:`naslung.data.scan_check.check_scan`), predicted on the serving path
(:func:`naslung.serving.predict.member_runner`) in batches, and released.

Resume: rows go to ``OUT.partial``, appended and fsynced per scan, and each finished scan is recorded in
``OUT.progress.jsonl`` with the byte length of the partial file after it. A rerun of the same command
truncates the partial file to the last recorded scan (a kill mid-write leaves no torn row), skips the scans
recorded, and finishes; only then ``OUT`` appears (renamed from the partial file), byte-identical to an
uninterrupted run. Errors (a table row whose scan is missing, an unreadable scan, a candidate outside its
scan) never stop the other scans: each is one entry of ``OUT.errors.json`` naming the series, the scan file
and the table rows, and its rows are left out of ``OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from naslung.data.errors import DataError
from naslung.progress import Progress, tracked
from naslung.serving.runs import CropSettings, RunModel

COORDS = ("coordX", "coordY", "coordZ")
WORLD = ("wx", "wy", "wz")
IMAGE_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd")
ERRORS_SCHEMA = "naslung-study-errors"
PROGRESS_SCHEMA = "naslung-study-progress"
#: Progress task of the scans.
SCANS_TASK = "scans"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.json")


@dataclass
class StudyReport:
    """What :func:`predict_study` did."""

    out: Path
    scans: int
    rows: int
    skipped_scans: int  # already done by an earlier, interrupted run
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_file: Path | None = None
    #: wall seconds of this call: ``read`` (reading and checking scans), ``crop`` (cutting the crops),
    #: ``model`` (the members' forward passes) and ``total``
    seconds: dict[str, float] = field(default_factory=dict)


def _image_uid(path: Path) -> str | None:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def index_scans(root: str | Path) -> dict[str, tuple[Path, str | None]]:
    """``seriesuid -> (path, DICOM series id or None)`` of every scan under ``root``; see the module doc."""
    from naslung.data.luna16 import SUBSET_RE, discover_scans

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--scans {root}: folder not found")
    if any(p.is_dir() and SUBSET_RE.match(p.name) for p in root.iterdir()):
        return {uid: (ref.path, None) for uid, ref in discover_scans(root).scans.items()}
    from naslung.data.images import dicom_series_ids

    found: dict[str, tuple[Path, str | None]] = {}

    def add(uid: str, where: Path, series: str | None) -> None:
        if uid in found:
            raise DataError(f"{where}: series {uid} also found at {found[uid][0]}")
        found[uid] = (where, series)

    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        others = False
        for name in sorted(files):
            uid = _image_uid(Path(name))
            if uid is not None:
                add(uid, Path(folder) / name, None)
            elif not name.lower().endswith(".raw"):
                others = True
        if others:
            for series in dicom_series_ids(folder):
                add(series, Path(folder), series)
    if not found:
        raise DataError(f"--scans {root}: no scan (.mhd, .nii, .nrrd or DICOM series) in this folder")
    return found


def read_candidate_rows(path: str | Path) -> Any:
    """The candidate table: coordinates kept as written (strings), their checked floats ``wx/wy/wz`` and the
    1-based data ``row``."""
    import pandas as pd

    from naslung.data.tables import read_csv_checked

    path = Path(path)
    checked = read_csv_checked(path, ("seriesuid", *COORDS), numeric=COORDS, str_columns=("seriesuid",))
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(raw) != len(checked):
        raise DataError(f"{path}: rows could not be read consistently")
    table = raw[["seriesuid", *COORDS]].copy()
    table["seriesuid"] = table["seriesuid"].str.strip()
    for c in COORDS:
        table[c] = table[c].str.strip()
    for c, w in zip(COORDS, WORLD, strict=True):
        table[w] = checked[c].to_numpy(dtype=np.float64)
    table["row"] = np.arange(1, len(table) + 1)
    return table


def columns_of(members: Sequence[RunModel]) -> list[str]:
    """The output header for ``members``."""
    cols = ["seriesuid", *COORDS, "probability"]
    if len(members) > 1:
        cols += [f"p_{m.name.rsplit('/', 1)[-1]}" for m in members] + ["vote"]
    return cols


def _fmt(p: float) -> str:
    return f"{p:.6f}"


def _identity(members: Sequence[RunModel], candidates: Path, scans: Path, settings: CropSettings) -> dict:
    digest = hashlib.sha256(Path(candidates).read_bytes()).hexdigest()
    return {"schema": PROGRESS_SCHEMA, "members": [m.name for m in members], "candidates_sha256": digest,
            "scans": str(scans), "crop": settings.key()}


def _predict_scan(volume: Any, rows: Any, runners: Sequence[Callable], settings: CropSettings, batch: int,
                  n_members: int, seconds: dict[str, float] | None = None
                  ) -> tuple[list[str], list[dict[str, Any]]]:
    """Output lines of one scan's rows, and the rows refused (outside the scan); adds the seconds spent
    cutting crops and in the models to ``seconds["crop"]`` and ``seconds["model"]``."""
    import time

    import torch

    from naslung.ensemble.vote import majority_vote
    from naslung.serving.predict import model_input

    seconds = seconds if seconds is not None else {}
    started = time.perf_counter()
    inputs, kept, errors = [], [], []
    for row in rows.itertuples(index=False):
        world = (row.wx, row.wy, row.wz)
        try:
            inputs.append(model_input(volume, world, settings)[0])
            kept.append(row)
        except DataError as exc:
            errors.append({"seriesuid": row.seriesuid, "scan": str(volume.path), "rows": [int(row.row)],
                           "coord": [float(v) for v in world], "error": str(exc)})
    cut = time.perf_counter()
    seconds["crop"] = seconds.get("crop", 0.0) + cut - started
    probs = np.zeros((n_members, len(kept)))
    with torch.no_grad():
        for start in range(0, len(kept), batch):
            x = torch.cat(inputs[start:start + batch])
            for j, run in enumerate(runners):
                probs[j, start:start + len(x)] = torch.softmax(run(x).float(), dim=1)[:, 1].double().numpy()
    seconds["model"] = seconds.get("model", 0.0) + time.perf_counter() - cut
    lines = []
    votes = majority_vote(probs) if n_members > 1 and len(kept) else None
    for i, row in enumerate(kept):
        cells = [row.seriesuid, row.coordX, row.coordY, row.coordZ, _fmt(float(probs[:, i].mean()))]
        if n_members > 1:
            cells += [_fmt(float(q)) for q in probs[:, i]] + [str(int(votes[i]))]
        lines.append(",".join(cells) + "\n")
    return lines, errors


def _resume_state(out: Path, identity: dict, overwrite: bool) -> tuple[set[str], list[dict], int]:
    """Scans done, errors so far and the partial file's valid length, from an earlier interrupted run."""
    from naslung.atomic import read_jsonl

    records = read_jsonl(progress_path(out)) if progress_path(out).is_file() else []
    if not records or not partial_path(out).is_file():
        return set(), [], 0
    recorded = {k: v for k, v in records[0].items() if k != "bytes"}
    if recorded != json.loads(json.dumps(identity)):
        if overwrite:
            return set(), [], 0
        raise ValueError(f"{progress_path(out)}: an interrupted prediction with other models, candidates or "
                         f"scans; pass --overwrite to start again, or another --out")
    done, errors, length = set(), [], int(records[0].get("bytes", 0))
    for r in records[1:]:
        done.add(r["seriesuid"])
        errors += r["errors"]
        length = int(r["bytes"])
    return done, errors, length


def predict_study(scans: str | Path, candidates: str | Path, members: Sequence[RunModel],
                  settings: CropSettings, out: str | Path, *, runtime: str = "torch", batch: int = 64,
                  overwrite: bool = False, progress: Progress | None = None,
                  on_scan_done: Callable[[str], None] | None = None) -> StudyReport:
    """Predict every row of ``candidates`` in the scans under ``scans`` into ``out`` (see the module doc).

    ``on_scan_done(seriesuid)`` is called after each scan is recorded (tests interrupt the run there).
    """
    import time

    from naslung.atomic import append_jsonl, write_json_atomic
    from naslung.data.images import read_ct
    from naslung.data.scan_check import check_scan
    from naslung.serving.predict import member_runner

    started = time.perf_counter()
    seconds = {"read": 0.0, "crop": 0.0, "model": 0.0}
    out, scans, candidates = Path(out), Path(scans), Path(candidates)
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    table = read_candidate_rows(candidates)
    index = index_scans(scans)
    identity = _identity(members, candidates, scans, settings)
    header = ",".join(columns_of(members)) + "\n"
    done, errors, length = _resume_state(out, identity, overwrite)
    partial = partial_path(out)
    if not done:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(header, encoding="utf-8")
        progress_path(out).unlink(missing_ok=True)
        append_jsonl(progress_path(out), {**identity, "bytes": len(header.encode())})
    else:
        with open(partial, "r+b") as fh:  # drop a scan torn by the kill
            fh.truncate(length)
    order = list(dict.fromkeys(table["seriesuid"].tolist()))
    runners = [member_runner(m, runtime, batch=batch) for m in members]
    n_rows = 0
    with tracked(progress, SCANS_TASK, len(order)) as advance:
        advance(len(done & set(order)))
        for uid in order:
            if uid in done:
                continue
            rows = table[table["seriesuid"] == uid]
            row_numbers = [int(r) for r in rows["row"]]
            scan_errors: list[dict[str, Any]] = []
            lines: list[str] = []
            if uid not in index:
                scan_errors.append({"seriesuid": uid, "scan": None, "rows": row_numbers,
                                    "error": f"series {uid}: no scan of this series under {scans}"})
            else:
                path, series = index[uid]
                reading = time.perf_counter()
                try:
                    volume = check_scan(read_ct(path, series))
                except (DataError, OSError) as exc:
                    scan_errors.append({"seriesuid": uid, "scan": str(path), "rows": row_numbers,
                                        "error": str(exc)})
                else:
                    seconds["read"] += time.perf_counter() - reading
                    lines, scan_errors = _predict_scan(volume, rows, runners, settings, batch, len(members),
                                                       seconds)
                    del volume
            with open(partial, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
                length = fh.tell()
            append_jsonl(progress_path(out), {"seriesuid": uid, "bytes": length, "errors": scan_errors})
            errors += scan_errors
            n_rows += len(lines)
            advance(rows=len(lines), errors=len(scan_errors))
            if on_scan_done is not None:
                on_scan_done(uid)
    write_json_atomic(errors_path(out), {"schema": ERRORS_SCHEMA, "predictions": out.name,
                                         "n_errors": len(errors), "errors": errors})
    os.replace(partial, out)
    progress_path(out).unlink(missing_ok=True)
    seconds["total"] = time.perf_counter() - started
    return StudyReport(out=out, scans=len(order), rows=n_rows, skipped_scans=len(done & set(order)),
                       errors=errors, errors_file=errors_path(out), seconds=seconds)


def read_errors(out: str | Path) -> list[dict[str, Any]]:
    """The errors of a finished study prediction (``OUT.errors.json``)."""
    return json.loads(errors_path(Path(out)).read_text(encoding="utf-8"))["errors"]
