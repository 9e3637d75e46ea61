"""Run-time guards of a training run: one writer per run folder, the same dataset on resume, finite loss.

The training engine calls these with one line each, so the checks live here and not in the loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; training stops at the first such batch."""

    def __init__(self, value: float, batch: int, epoch: int | None = None) -> None:
        self.value, self.batch, self.epoch = value, batch, epoch
        where = f"epoch {epoch}, batch {batch}" if epoch is not None else f"batch {batch}"
        super().__init__(
            f"training stopped: the loss became {value} at {where}; the learning rate may be too high "
            f"(--lr) or the inputs hold NaN/inf values (check the dataset, e.g. a window with lo = hi)")


def check_finite_loss(loss: torch.Tensor, batch: int) -> None:
    """Raise :class:`NonFiniteLossError` when ``loss`` is NaN or infinite (``batch`` is 1-based)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(value, batch)


def at_epoch(epoch: int, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` whose :class:`NonFiniteLossError` names ``epoch`` too."""

    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(exc.value, exc.batch, epoch) from None

    return call


def recorded_fingerprint(run_dir: Path) -> str | None:
    """The dataset fingerprint a run folder's ``config.json`` recorded (None: none recorded)."""
    from naslung.train.rundir import RunDir

    path = RunDir(run_dir).config
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); the run folder is damaged") from None
    return ((data.get("dataset") or {}) if isinstance(data, dict) else {}).get("fingerprint")


@contextmanager
def run_folder(out: Path, dataset: Any) -> Iterator[None]:
    """Hold ``out``'s writer lock and refuse a run folder that was made with another dataset."""
    from naslung.fingerprint import check_same, fingerprint_of
    from naslung.lock import output_lock

    with output_lock(out, "naslung train"):
        check_same(recorded_fingerprint(out), fingerprint_of(dataset), out, "resume or overwrite")
        yield
