"""``naslung predict``: malignancy of the nodule at world coordinates of a CT file, by one model or more.

Models: a bundled model name (``naslung models list``), a run folder (one model), a cv folder (its
``fold_<K>`` models) or an ensemble (a folder of run folders, or a ``.json`` with a ``"runs"`` list such as
``naslung ensemble --json`` prints). Each member's
probability is reported, with the paper's majority vote (> floor(n/2) members at p >= 0.5, section 3.5),
the soft vote and the agreement (:mod:`naslung.ensemble.vote`).

Preprocessing is ``naslung data prepare``'s own code, applied with the settings the models were trained on:
:func:`naslung.data.prepare.extract_crop` (world-aligned, ``spacing`` mm, trilinear, air outside the scan),
:func:`~naslung.data.prepare.window_hu` (int16 HU), :func:`naslung.data.dataset.to_unit_range` and the
centre ``size`` window (:func:`naslung.train.augment.center_crop`). A nodule of the prepared dataset gets
the probability that evaluation gives it.

Runtimes (:data:`RUNTIMES`): ``torch`` runs each member on the serving path
(:func:`naslung.models.fast.eval_model`, batch norm folded, channels-last in 3-D);
``onnx`` exports each member's checkpoint once (:func:`naslung.models.onnx.cached_export`) and runs it with
ONNX Runtime on the CPU (the ``onnx`` extra). Attention maps always come from the PyTorch model.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from naslung.data.errors import DataError
from naslung.options import check_option
from naslung.serving.runs import CropSettings, RunModel, load_run_model
from naslung.train.rundir import RunDir, runs_under

#: What ``naslung predict --runtime`` runs the members with.
RUNTIMES: tuple[str, ...] = ("torch", "onnx", "openvino", "auto")
#: What ``auto`` chooses between, by timing each on the member (benchmarks/engines.py: no engine wins for
#: every model and batch size; ONNX Runtime lost everywhere there, so it is not a candidate).
AUTO_CANDIDATES: tuple[str, ...] = ("torch", "openvino")
#: A member ready to predict: ``(B, 1, *S)`` float32 crops -> ``(B, num_classes)`` float32 logits.
Runner = Callable[[torch.Tensor], torch.Tensor]


def find_members(model: str | Path) -> list[Path]:
    """Run folders behind ``model``: a run, a cv folder (every fold), a folder of runs, or a JSON list."""
    model = Path(model)
    if model.is_file() and model.suffix == ".json":
        try:
            runs = json.loads(model.read_text()).get("runs")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{model}: not an ensemble JSON with a 'runs' list ({exc})") from exc
        if not isinstance(runs, list) or not runs:
            raise ValueError(f"{model}: no 'runs' list in this ensemble JSON")
        return [Path(r) for r in runs]
    if not model.is_dir():
        raise FileNotFoundError(f"{model}: --model must be a run folder, a cv folder or an ensemble")
    if RunDir(model).finished():
        return [model]
    found = [run.path for run in runs_under(model)]
    if not found:
        raise FileNotFoundError(f"{model}: no finished training run (result.json) in or under it")
    return found


def load_members(model: str | Path) -> list[RunModel]:
    """Load every member of ``model``: a bundled model name (:func:`naslung.serving.bundled.load_bundled`; an
    existing path of that name wins), else the runs of :func:`find_members`."""
    from naslung.zoo.registry import is_model_name

    if is_model_name(model):
        from naslung.serving.bundled import load_bundled

        return load_bundled(str(model))
    return [load_run_model(p) for p in find_members(model)]


def load_for_fold(model: str | Path, fold: int | None = None) -> list[RunModel]:
    """The models that ``explain`` and ``evaluate`` use on ``fold``: every member of a bundled model name
    (its card's folds in ``trained_folds``), else the run, or ``fold_<fold>`` of a cv folder."""
    from naslung.zoo.registry import is_model_name

    if is_model_name(model):
        from naslung.serving.bundled import load_bundled

        return load_bundled(str(model))
    return [load_run_model(model, fold)]


def resolve_settings(members: Sequence[RunModel], spacing: float | None = None,
                     window: tuple[float, float] | None = None) -> tuple[CropSettings, list[str]]:
    """The one crop setting of all members, and notes on what had to be assumed.

    Members trained on other crop settings (side, 2-D/3-D, spacing, HU window) than the first, or an explicit
    ``spacing``/``window`` that differs from what a member was trained on, raise ``ValueError`` naming the run
    and the setting. A setting no member records (its dataset file is gone) comes from the arguments, else
    from ``naslung data prepare``'s defaults, with a note.
    """
    from naslung.data.prepare import DEFAULT_WINDOW

    ref = members[0]
    for m in members[1:]:
        for key, want in ref.crop.key().items():
            have = m.crop.key()[key]
            if None not in (have, want) and have != want:
                raise ValueError(f"{m.path}: trained on crops with {key}={have}, but {ref.path} on "
                                 f"{key}={want}; an ensemble needs one crop setting")
    known_spacing = next((m.crop.spacing for m in members if m.crop.spacing is not None), None)
    known_window = next((m.crop.window for m in members if m.crop.window is not None), None)
    window = tuple(float(v) for v in window) if window is not None else None
    for name, asked, known in (("spacing", spacing, known_spacing), ("window", window, known_window)):
        if asked is not None and known is not None and asked != known:
            who = next(m.path for m in members if m.crop.key()[name] is not None)
            raise ValueError(f"{who}: model trained on crops with {name}={known}, not --{name} {asked}")
    notes = []
    if known_spacing is None and spacing is None:
        notes.append("crop spacing not recorded (dataset file gone): assuming 1.0 mm, prepare's default")
    if known_window is None and window is None:
        notes.append(f"HU window not recorded (dataset file gone): assuming {DEFAULT_WINDOW}, "
                     f"prepare's default")
    settings = CropSettings(size=ref.crop.size, margin=ref.crop.margin, dims=ref.crop.dims,
                            spacing=known_spacing or spacing or 1.0,
                            window=known_window or window or DEFAULT_WINDOW, source=ref.crop.source)
    return settings, notes


def parse_coords(text: str) -> tuple[float, float, float]:
    """``"X,Y,Z"`` world mm -> a tuple; ``DataError`` naming the text otherwise."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not np.all(np.isfinite(values)):
        raise DataError(f"--coords {text!r}: expected three world coordinates in mm, X,Y,Z")
    return values  # type: ignore[return-value]


def read_coords_file(path: str | Path) -> list[tuple[str, tuple[float, float, float]]]:
    """``(id, (x, y, z))`` rows of a CSV with LUNA16 columns ``coordX, coordY, coordZ`` (or ``x, y, z``);
    the id is the ``id``/``nodule_id`` column when present, else the row number."""
    import pandas as pd

    from naslung.data.tables import read_csv_checked

    path = Path(path)
    try:
        head = pd.read_csv(path, nrows=0).columns if path.is_file() else []
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    cols = ("coordX", "coordY", "coordZ") if "coordX" in head else ("x", "y", "z")
    ids = next((c for c in ("id", "nodule_id") if c in head), None)
    table = read_csv_checked(path, cols, numeric=cols, str_columns=(ids,) if ids else ())
    if table.empty:
        raise DataError(f"{path}: no coordinates in this CSV")
    return [(str(row[ids]) if ids else str(i), (row[cols[0]], row[cols[1]], row[cols[2]]))
            for i, row in table.iterrows()]


@dataclass
class NodulePrediction:
    """Prediction for one coordinate: member probabilities, votes, agreement, crop and attention."""

    id: str
    world: tuple[float, float, float]
    members: list[dict[str, Any]]
    majority: int
    soft: int
    mean_prob: float
    agreement: float
    padded: bool
    ct: np.ndarray = field(repr=False)  # (H, W) central slice in [0, 1]
    attention: np.ndarray | None = field(default=None, repr=False)  # (H, W) in [0, 1], member mean
    overlay: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "world_mm": list(self.world), "members": self.members,
                "majority_vote": "malignant" if self.majority else "benign", "majority": self.majority,
                "soft_vote": self.soft, "mean_prob": self.mean_prob, "agreement": self.agreement,
                "padded": self.padded, "overlay": self.overlay}


def model_input(volume: Any, world: Sequence[float], settings: CropSettings) -> tuple[torch.Tensor, bool]:
    """``(1, 1, *[size] * dims)`` model input at ``world`` (x, y, z mm), cut as ``prepare`` cuts crops.

    A centre outside the scan is a ``DataError`` naming the file, the coordinate and the scan's extent.
    """
    from naslung.data.dataset import to_unit_range
    from naslung.data.geometry import extract_crop, window_hu
    from naslung.data.prepare import PrepareConfig
    from naslung.train.augment import center_crop

    g = volume.geometry
    if not g.contains(world):
        lo = g.index_to_world([-0.5, -0.5, -0.5])
        hi = g.index_to_world(np.asarray(g.size) - 0.5)
        raise DataError(f"{volume.path}: coordinate {np.round(world, 2).tolist()} mm (x, y, z) lies outside "
                        f"the scan (corners {np.round(lo, 1).tolist()} .. {np.round(hi, 1).tolist()})")
    # PrepareConfig validates the settings and derives the stored side and pad value exactly as prepare does.
    prep = PrepareConfig(luna_dir=Path("."), out=Path("."), dims=settings.dims, size=settings.size,
                         margin=settings.margin, spacing=float(settings.spacing or 1.0),
                         window=settings.window or (0.0, 1.0))
    crop, padded = extract_crop(volume, world, prep.side, prep.spacing, prep.dims, prep.pad_value)
    image = to_unit_range(window_hu(crop, prep.window), prep.window)
    return center_crop(torch.from_numpy(image)[None], prep.size), padded


def _openvino_usable() -> bool:
    import importlib.util
    import os

    return importlib.util.find_spec("openvino") is not None and not os.environ.get("ONEDNN_MAX_CPU_ISA")


def fastest_runner(member: RunModel, batch: int = 1, repeats: int = 5) -> tuple[str, Runner]:
    """``(engine, runner)``: the faster of :data:`AUTO_CANDIDATES` for ``member`` at ``batch``, timed here
    (two warm-up calls, the median of ``repeats``) on zeros of the member's input shape. OpenVINO is a
    candidate only where it is installed and ``ONEDNN_MAX_CPU_ISA`` is unset; the torch path otherwise."""
    import statistics
    import time

    candidates = [e for e in AUTO_CANDIDATES if e == "torch" or _openvino_usable()]
    if next(member.model.parameters()).device.type != "cpu":
        candidates = ["torch"]
    in_channels = int(getattr(member.model, "config", {}).get("in_channels", 1))
    x = torch.zeros(batch, in_channels, *([member.crop.size] * member.crop.dims))
    best: tuple[float, str, Runner] | None = None
    for engine in candidates:
        runner = member_runner(member, engine)
        for _ in range(2):
            runner(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        if best is None or median < best[0]:
            best = (median, engine, runner)
    assert best is not None
    return best[1], best[2]


def member_runner(member: RunModel, runtime: str = "torch", batch: int = 1) -> Runner:
    """``member`` ready to predict on ``runtime`` (:data:`RUNTIMES`).

    ``auto``: the faster of torch and OpenVINO for this member at ``batch``, timed on this machine when the
    runner is made (:func:`fastest_runner`); the choice is not stored, so two processes may choose differently
    (their outputs agree within 1e-4).

    ``torch``: a BN-folded eval copy (:func:`naslung.models.fast.eval_model`), in the memory format
    :func:`naslung.models.fast.serving_channels_last` gives (``channels_last_3d`` in 3-D). ``onnx``: the
    member's ``best.pt`` exported once to the ONNX cache and run by ONNX Runtime with as many threads as
    torch; ``openvino``: the same file run by OpenVINO (:class:`naslung.models.onnx.OpenVinoRunner`, as
    many threads);
    without the extra an ``ImportError`` says how to install it.
    """
    check_option("runtime", runtime, RUNTIMES)
    if runtime == "auto":
        return fastest_runner(member, batch)[1]
    if runtime in ("onnx", "openvino"):
        from naslung.models.onnx import (
            OnnxRunner,
            OpenVinoRunner,
            cached_export,
            require_onnx,
            require_openvino,
        )

        (require_onnx if runtime == "onnx" else require_openvino)(f"--runtime {runtime}")
        exported = cached_export(member.model, RunDir(member.path).best, member.crop.size)
        runner_type = OnnxRunner if runtime == "onnx" else OpenVinoRunner
        runner = runner_type(exported, threads=torch.get_num_threads())
        return lambda x: torch.from_numpy(runner(x))
    from naslung.models.fast import eval_model, serving_channels_last
    from naslung.train.inference import format_input

    trained_channels_last = bool((member.config.get("config") or {}).get("channels_last", False))
    channels_last = serving_channels_last(trained_channels_last, member.crop.dims)
    net = eval_model(member.model, channels_last=channels_last)
    return lambda x: net(format_input(x, channels_last))


@torch.no_grad()
def predict_nodules(image: str | Path, coords: Sequence[tuple[str, Sequence[float]]],
                    members: Sequence[RunModel], settings: CropSettings, runtime: str = "torch",
                    attention: bool = True, series_id: str | None = None) -> list[NodulePrediction]:
    """Predict every ``(id, world)`` of ``coords`` in CT file ``image`` with ``members`` on ``runtime``
    (:data:`RUNTIMES`); ``attention=False`` skips the attention maps (needed only for overlays).

    ``series_id`` picks one series of a DICOM folder that holds several. The scan must pass
    :func:`naslung.data.scan_check.check_scan` (geometry and HU range).
    """
    from naslung.data.images import read_ct
    from naslung.data.scan_check import check_scan
    from naslung.ensemble.vote import agreement, majority_vote, soft_vote
    from naslung.explain.attention import central_slice, spatial_attention

    volume = check_scan(read_ct(image, series_id))
    runners = [member_runner(m, runtime) for m in members]
    out = []
    for nid, world in coords:
        world = tuple(float(v) for v in world)
        x, padded = model_input(volume, world, settings)
        probs, maps = [], []
        for m, run in zip(members, runners, strict=True):
            probs.append(float(torch.softmax(run(x).float(), dim=1)[0, 1]))
            if attention:
                with contextlib.suppress(ValueError):  # a member without attention gives no map
                    maps.append(spatial_attention(m.model, x)[0].numpy())
        p = np.asarray(probs)[:, None]
        out.append(NodulePrediction(
            id=nid, world=world,  # type: ignore[arg-type]
            members=[{"run": m.name, "spec": m.spec, "prob_malignant": q, "vote": int(q >= 0.5)}
                     for m, q in zip(members, probs, strict=True)],
            majority=int(majority_vote(p)[0]), soft=int(soft_vote(p)[0]), mean_prob=float(p.mean()),
            agreement=float(agreement(p)[0]), padded=padded, ct=central_slice(x[0, 0].numpy()),
            attention=central_slice(np.mean(maps, axis=0)) if maps else None))
    return out


def overlay_paths(path: str | Path, ids: Sequence[str]) -> list[Path]:
    """Where :func:`save_overlays` writes: ``path`` for one nodule, ``<stem>_<id><suffix>`` for several."""
    path = Path(path)
    if len(ids) == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix or '.png'}") for i in ids]


def save_overlays(predictions: Sequence[NodulePrediction], path: str | Path) -> list[Path]:
    """CT | attention | overlay PNG per prediction: ``path`` for one, ``<stem>_<id><suffix>`` for several."""
    from naslung.explain.attention import save_pair_png

    targets = overlay_paths(path, [p.id for p in predictions])
    written = []
    for p, target in zip(predictions, targets, strict=True):
        if p.attention is None:
            continue
        verdict = "malignant" if p.majority else "benign"
        title = f"p={p.mean_prob:.2f} ({verdict}, agreement {p.agreement:.2f})"
        save_pair_png(target, p.ct, p.attention, title, overlay=True)
        p.overlay = str(target)
        written.append(target)
    return written
