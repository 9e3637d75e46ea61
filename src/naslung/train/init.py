"""Where a run's weights start: a random init (the default), or trained weights asked for explicitly.

``naslung train`` and ``naslung cv`` start from a random init unless ``--init NAME`` names a bundled model
(:func:`naslung.zoo.init.bundled_init` builds the :class:`WeightInit`); ``search`` and ``reproduce`` always
start from a random init. Every run records its start in ``config.json`` as ``"init"``: ``null``, or
:attr:`WeightInit.record` (the model's name and the sha256 of the weights file).

Starting from weights trained on a fold leaks that fold into any test on it, so :func:`check_init` refuses
a test fold the weights were trained on (a deployment model of :mod:`naslung.zoo` was trained on every fold:
``cv --init`` refuses them all), and a model whose architecture, head or input differs from the run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WeightInit:
    """Trained weights a run starts from.

    Attributes:
        name: how errors and ``config.json`` name it (``voi3d-default``, ``voi2d-ensemble/m01-...``).
        state: the model's ``state_dict``.
        model_options: :meth:`TrainConfig.model_options` of the run that trained it (arch, loss, head, ...).
        spatial_dims: 2 or 3.
        folds: every fold whose nodules trained or validated it.
        record: what ``config.json`` records under ``"init"`` (JSON-serialisable).
        input: the crops it was trained on: ``size``, ``spacing_mm``, ``window_hu`` (any may be missing).
    """

    name: str
    state: dict[str, Any] = field(repr=False)
    model_options: dict[str, Any]
    spatial_dims: int
    folds: tuple[int, ...]
    record: dict[str, Any]
    input: dict[str, Any] = field(default_factory=dict)


def init_record(init: WeightInit | None) -> dict[str, Any] | None:
    """The ``"init"`` entry of ``config.json``."""
    return None if init is None else dict(init.record)


def _folds_text(folds: Sequence[int]) -> str:
    folds = sorted(int(f) for f in folds)
    if len(folds) > 2 and folds == list(range(folds[0], folds[-1] + 1)):
        return f"{folds[0]}-{folds[-1]}"
    return ", ".join(str(f) for f in folds)


def check_init_folds(init: WeightInit | None, test_folds: Sequence[int | None]) -> None:
    """Refuse test folds the weights were trained on (``ValueError``, one line naming the model and folds)."""
    if init is None:
        return
    seen = sorted({int(f) for f in test_folds if f is not None} & {int(f) for f in init.folds})
    if seen:
        raise ValueError(f"--init {init.name}: trained on folds {_folds_text(init.folds)}, so test fold"
                         f"{'s' if len(seen) > 1 else ''} {_folds_text(seen)} would test it on nodules it "
                         f"learned from; refused (test on a fold it never saw, or train without --init)")


def check_init(init: WeightInit | None, config: Any, dataset: Any, test_folds: Sequence[int | None] = (),
               data: Any = None) -> None:
    """Refuse ``init`` for this run: another architecture or head than ``config``'s, crops of another kind
    than ``dataset``'s, or a test fold it was trained on. ``ValueError`` naming ``--init`` and the setting."""
    if init is None:
        return
    where = f"--data {data}" if data is not None else "the data"
    if int(dataset.spatial_dims) != int(init.spatial_dims):
        raise ValueError(f"--init {init.name}: a {init.spatial_dims}-D model, but {where} holds "
                         f"{dataset.spatial_dims}-D crops")
    size = init.input.get("size")
    if size is not None and int(size) != int(dataset.size):
        raise ValueError(f"--init {init.name}: trained on crops of side {size}, but {where} holds side "
                         f"{dataset.size}")
    spacing = init.input.get("spacing_mm")
    have = dataset.attrs.get("spacing_mm")
    if spacing is not None and have is not None and float(have) != float(spacing):
        raise ValueError(f"--init {init.name}: trained on crops at {spacing} mm, but {where} is at {have} mm")
    window = init.input.get("window_hu")
    have = dataset.attrs.get("window")
    if window is not None and have is not None and [float(v) for v in have] != [float(v) for v in window]:
        raise ValueError(f"--init {init.name}: trained on HU window {list(window)}, but {where} has "
                         f"{[float(v) for v in have]}")
    wanted = config.model_options()
    legacy = {"cbam_kernel": 7, "embedding": "relu"}
    differ = [k for k, v in wanted.items() if init.model_options.get(k, legacy.get(k)) != v]
    if differ:
        shown = ", ".join(f"{k}={init.model_options.get(k)!r} (this run: {wanted[k]!r})" for k in differ)
        raise ValueError(f"--init {init.name}: its weights have {shown}; give the model's own settings "
                         f"(or leave --arch out: it defaults to the model's)")
    check_init_folds(init, test_folds)


def apply_init(model: Any, init: WeightInit | None) -> None:
    """Load ``init``'s weights into ``model`` (strict); ``ValueError`` naming the model if they do not fit."""
    if init is None:
        return
    try:
        model.load_state_dict(init.state)
    except RuntimeError as exc:
        raise ValueError(f"--init {init.name}: its weights do not fit this run's model "
                         f"({str(exc).splitlines()[0]})") from None
