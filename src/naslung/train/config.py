"""Training configuration: one frozen object, resolved once and written into every run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from naslung.models.spec import ArchSpec, coerce_spec

LOSSES = ("asoftmax", "softmax")
ATTENTIONS = ("cbam", "cbam-spatial-first", "none")
DEVICES = ("auto", "cpu", "cuda")
SELECT_METRICS = ("f1", "accuracy")

#: Loss -> classifier head (docs/CONTRACTS.md): A-Softmax needs the angular (normalised, bias-free) head.
HEAD_FOR_LOSS = {"asoftmax": "angular", "softmax": "linear"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (besides the data and the test fold).

    Attributes:
        arch: architecture in the paper's notation, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"``.
        epochs: training epochs. The paper does not state it for final training; 50 is our default
            (the search trains candidates for 10, paper section 4.1.3).
        batch_size: mini-batch size.
        lr, betas: Adam settings of the paper (2e-4, (0.5, 0.999)).
        weight_decay: Adam weight decay (paper: none).
        loss: ``asoftmax`` (angular head) or ``softmax`` (linear head).
        attention: ``cbam``, ``cbam-spatial-first`` or ``none``.
        seed: seeds the weight init, the inner split, shuffling and augmentation.
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        val_fraction: share of the training folds' patients held out as the inner validation split.
        select_metric: validation metric that picks the checkpoint (``f1`` or ``accuracy``).
        augment: random crop out of the stored margin + flips on every spatial axis.
        max_shift: largest shift (voxels, per axis) of the random crop from the centre. 2 is the paper's
            36 -> 32 crop; a larger stored margin is then real context rather than a larger shift.
            None: anywhere in the stored margin.
        eval_batch_size: batch size for validation/test inference.
        num_threads: torch intra-op threads on CPU (None: leave torch's default).
        channels_last: channels-last memory format (3-D: ``channels_last_3d``). On by default: measured
            1.2-7x faster training on CPU in ``benchmarks/train_throughput.py`` (see README).
    """

    arch: str = "[4,4,[4,4],[4,8],[8,8]]"
    epochs: int = 50
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    loss: str = "asoftmax"
    attention: str = "cbam"
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.15
    select_metric: str = "f1"
    augment: bool = True
    max_shift: int | None = 2
    eval_batch_size: int = 128
    num_threads: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", str(coerce_spec(self.arch)))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _choice("loss", self.loss, LOSSES)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("device", self.device, DEVICES)
        _choice("select_metric", self.select_metric, SELECT_METRICS)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.max_shift is not None and self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 or None, got {self.max_shift}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def spec(self) -> ArchSpec:
        return ArchSpec.parse(self.arch)

    @property
    def head(self) -> str:
        return HEAD_FOR_LOSS[self.loss]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise so typos never pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def model_options(self) -> dict[str, Any]:
        """The options that must match between a checkpoint and a resumed run."""
        return {"arch": self.arch, "loss": self.loss, "head": self.head, "attention": self.attention}


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
