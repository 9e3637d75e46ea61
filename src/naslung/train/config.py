"""Training configuration: one frozen object, resolved once and written into every run folder."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from naslung.models.blocks.cbam import SPATIAL_KERNELS
from naslung.models.spec import ArchSpec, coerce_spec
from naslung.options import ATTENTIONS, DEVICES, EMBEDDINGS, HEAD_FOR_LOSS, LOSSES, check_option, check_seed
from naslung.options import METRICS as SELECT_METRICS
from naslung.train.augment import ExtraAugment
from naslung.train.schedule import LAMBDA_SCHEDULES, LR_SCHEDULES

#: Training budgets by name: TrainConfig fields that ``--budget`` sets (explicit options still win).
#: ``paper``: section 4.1.3 trains final models for 700 epochs with A-Softmax; early stopping on the inner
#: validation split (patience 100 epochs) keeps a plateaued run from spending hours. ``cpu``: the defaults.
BUDGETS: dict[str, dict[str, Any]] = {"cpu": {}, "paper": {"epochs": 700, "patience": 100}}

#: The paper's own training (section 4.1.3), as TrainConfig fields over naslung's recipe: Adam at a constant
#: 2e-4, crop + flip only, SphereFace's lambda constants, CBAM with the 7^3 kernel, no EMA/TTA/balancing.
PAPER_RECIPE: dict[str, Any] = {
    "lr": 2e-4, "weight_decay": 0.0, "lr_schedule": "constant", "warmup_epochs": 0.0,
    "lambda_schedule": "sphereface", "rot90": False, "permute_axes": False, "affine_deg": 0.0,
    "affine_scale": 0.0, "intensity": 0.0, "noise_std": 0.0, "tta": False, "ema_decay": None,
    "class_balance": False, "cbam_kernel": 7, "embedding": "relu",
}
#: Recipes by name (``--recipe``): ``naslung`` is the TrainConfig defaults.
RECIPES: dict[str, dict[str, Any]] = {"naslung": {}, "paper": PAPER_RECIPE}

#: The default architecture by the data's dimensionality (``TrainConfig.resolve(spatial_dims=...)``),
#: chosen on real LIDC development folds (docs/results.md, "Real LIDC CT"); 3-D is also the dataclass default.
#: Both are [8,8,[8,8],[16,16],[32,32]] ("arch-8"), measured against Model-1 on development folds 0 and 6-9
#: (AUC selection, 32 epochs; the diameter baseline on the same splits 83.11 acc / 80.01 F1):
#: - 2-D (axial slices): Model-1 83.28 acc / 81.63 F1, arch-8 86.03 / 84.03;
#: - 3-D (cubes, 7 % real CT at the median): Model-1 84.18 / 81.80 / 89.96 AUC, arch-8 85.37 / 83.03 / 91.48,
#:   at about 1.5x Model-1's training time (fused kernels; 540 s against 345 s per fold, one thread).
#: Rerun: benchmarks/recipe_ablation.py --data VOIS.h5 --variants arch-8,model1 (folds 0,6,7,8,9).
DEFAULT_ARCHS: dict[int, str] = {3: "[8,8,[8,8],[16,16],[32,32]]", 2: "[8,8,[8,8],[16,16],[32,32]]"}



@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (besides the data and the test fold).

    Attributes:
        arch: architecture in the paper's notation, e.g. ``"[4,4,[4,4],[4,8],[8,8]]"``.
        epochs: planned training epochs. The paper trains candidates for 10 epochs in the search and final
            models for 700 epochs with A-Softmax (section 4.1.3; ``BUDGETS["paper"]``). Our default fits a
            2-core CPU (``BUDGETS["cpu"]``); ``patience`` stops a long budget early.
        batch_size: mini-batch size.
        lr, betas: peak learning rate and Adam betas. The paper: 2e-4 constant, (0.5, 0.999); the recipe
            keeps the betas and peaks at 1e-3 on a cosine schedule.
        weight_decay: decoupled (AdamW) weight decay (paper: none; AdamW with 0 is exactly Adam).
        loss: ``asoftmax`` (angular head) or ``softmax`` (linear head).
        attention: ``cbam``, ``cbam-spatial-first`` or ``none``.
        seed: seeds the weight init, the inner split, shuffling and augmentation.
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        val_fraction: share of the training folds' patients held out as the inner validation split.
        select_metric: validation metric that picks the checkpoint (``naslung.options.METRICS``).
        select_min_balanced_accuracy: epochs whose validation balanced accuracy is under it are kept only
            when no epoch reaches it (:func:`naslung.train.selection.select_epoch`); 0: every epoch may be
            kept (the default). ``naslung search`` sets the selection floor here for its short trials.
        augment: random crop out of the stored margin + flips on every spatial axis.
        max_shift: largest shift (voxels, per axis) of the random crop from the centre. 2 is the paper's
            36 -> 32 crop; a larger stored margin is then real context rather than a larger shift.
            None: anywhere in the stored margin.
        eval_batch_size: batch size for validation/test inference.
        num_threads: torch intra-op threads on CPU (None: leave torch's default).
        channels_last: channels-last memory format, 3-D only (``channels_last_3d``; 2-D always runs
            contiguous, see ``engine.channels_last_applies``). On by default: measured faster training on
            CPU in ``benchmarks/train_throughput.py`` (see docs/performance.md). Predictions of a 3-D run
            that trains in it run channels-last too, faster under AVX2
            (``naslung.models.fast.serving_channels_last``).
        amp: bf16 autocast around the training forward on a CUDA GPU with bf16
            (``torch.cuda.is_bf16_supported()``; the loss stays float32). No effect on CPU, which trains in
            float32 either way. Off by default: on an H200 it made a whole 10-epoch Model-1 fold only ~2 %
            faster (the step is 1.1-1.3x, ``benchmarks/gpu_check.py``, but these small nets are bound by
            Python and data, not by the GPU), its gradients differed from fp32 by up to 60 % of their scale,
            and its one development-fold run ended 5 F1 points lower (see docs/performance.md).
        cbam_kernel: kernel of CBAM's spatial-gate conv (3 or 7; the paper does not state it).
        fft_gates: run CBAM's spatial-gate conv through the FFT on CPU (the same conv to float rounding,
            several times faster; :mod:`naslung.models.blocks.fft_conv`). False: the conv module.
        embedding: ``relu`` (Fig. 2 as written: the pooled embedding is >= 0) or ``linear`` (the last
            residual block's sum before its ReLU); see :mod:`naslung.models.factory`.
        split_seed: seeds the inner train/validation split only, apart from ``seed`` (init, shuffling,
            augmentation), so that every candidate of a search and every seed of a cv validates on the same
            nodules.
        lr_schedule, warmup_epochs: ``constant`` (paper) or ``cosine`` with a linear warm-up
            (``naslung.train.schedule``).
        lambda_schedule, lambda_floor_at: A-Softmax lambda annealing; ``run`` reaches the floor at that
            fraction of the planned iterations, ``sphereface`` uses SphereFace's iteration constants.
        rot90, permute_axes, affine_deg, affine_scale, intensity, noise_std: CT-aware augmentation beyond
            the paper's crop+flip (``naslung.train.augment.ExtraAugment``).
        tta: average the malignancy probability over all axis flips for validation and test predictions.
        ema_decay: evaluate an exponential moving average of the weights (None: off).
        class_balance: weight the loss by inverse class frequency of the training rows.
        patience: stop when the selection metric has not improved on the inner validation split for this
            many epochs (None: train all epochs). Selection still picks the best validation epoch.
    """

    arch: str = DEFAULT_ARCHS[3]
    # 32 epochs and AUC selection: chosen on real 2-D VOI development folds. At 16 epochs with F1 selection
    # Model-1 picked epochs 3-5, where it called every nodule malignant (F1 2p/(1+p) ~ 0.63 beats a model
    # still learning), and lost to diameter by 15 F1; with AUC and 32 epochs it picks epochs 28-32.
    epochs: int = 32
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01
    loss: str = "asoftmax"
    attention: str = "cbam"
    seed: int = 0
    device: str = "auto"
    val_fraction: float = 0.15
    select_metric: str = "auc"
    select_min_balanced_accuracy: float = 0.0
    augment: bool = True
    max_shift: int | None = 2
    eval_batch_size: int = 128
    num_threads: int | None = None
    channels_last: bool = True
    amp: bool = False
    cbam_kernel: int = 7
    fft_gates: bool = True
    embedding: str = "relu"
    split_seed: int = 0
    # The recipe (docs/explanation.md, "The recipe and the embedding"): chosen on development folds 0 and 6
    # with
    # benchmarks/recipe_ablation.py, then frozen before folds 1-5 were trained.
    lr_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    lambda_schedule: str = "run"
    lambda_floor_at: float = 0.5
    rot90: bool = True
    permute_axes: bool = False
    affine_deg: float = 0.0
    affine_scale: float = 0.0
    intensity: float = 0.03
    noise_std: float = 0.01
    tta: bool = True
    ema_decay: float | None = 0.99
    class_balance: bool = True
    patience: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", str(coerce_spec(self.arch)))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _check_types(self)
        for name in ("seed", "split_seed"):
            check_seed(name, getattr(self, name))
        _choice("loss", self.loss, LOSSES)
        _choice("attention", self.attention, ATTENTIONS)
        _choice("device", self.device, DEVICES)
        _choice("select_metric", self.select_metric, SELECT_METRICS)
        if not 0.0 <= self.select_min_balanced_accuracy <= 1.0:
            raise ValueError("select_min_balanced_accuracy must lie in [0, 1], got "
                             f"{self.select_min_balanced_accuracy}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads (--threads) must be >= 1, got {self.num_threads}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.max_shift is not None and self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 or None, got {self.max_shift}")
        if not self.lr > 0 or self.lr == float("inf"):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")
        if self.cbam_kernel not in SPATIAL_KERNELS:
            raise ValueError(f"cbam_kernel must be one of {SPATIAL_KERNELS}, got {self.cbam_kernel}")
        _choice("embedding", self.embedding, EMBEDDINGS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        if not 0.0 < self.lambda_floor_at <= 1.0:
            raise ValueError(f"lambda_floor_at must lie in (0, 1], got {self.lambda_floor_at}")
        for name in ("warmup_epochs", "affine_deg", "affine_scale", "intensity", "noise_std", "weight_decay"):
            value = getattr(self, name)
            if not 0.0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.affine_scale >= 1.0:
            raise ValueError(f"affine_scale must be < 1, got {self.affine_scale}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")

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
        """Inverse of :meth:`to_dict`; unknown keys raise so typos never pass silently.

        A whole config written before ``embedding`` existed (every other field present, e.g. a run's
        ``config.json``) was trained with the ReLU embedding, so it reads back with ``embedding="relu"``;
        a partial config (``--config``) keeps the default.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(known)}")
        newer = {"embedding", "fft_gates", "select_min_balanced_accuracy"}  # fields added after old configs
        if "embedding" not in data and known - newer <= set(data):
            data = {**data, "embedding": "relu"}
        return cls(**data)

    @classmethod
    def resolve(cls, base: dict[str, Any] | None = None, budget: str | None = None,
                recipe: str | None = None, spatial_dims: int | None = None, **given: Any) -> TrainConfig:
        """``base`` fields (e.g. a saved config), then the ``recipe``'s and the ``budget``'s fields, then
        every non-None ``given``.

        This is how the CLI builds a config: options left unset are None and keep the dataclass default,
        so no default is restated outside this class. ``spatial_dims`` (the data's, 2 or 3): an ``arch``
        that neither ``base`` nor ``given`` sets is :data:`DEFAULT_ARCHS` of it.
        """
        data = dict(base or {})
        if spatial_dims is not None and "arch" not in data and given.get("arch") is None:
            if spatial_dims not in DEFAULT_ARCHS:
                raise ValueError(f"spatial_dims must be one of {sorted(DEFAULT_ARCHS)}, got {spatial_dims}")
            data["arch"] = DEFAULT_ARCHS[spatial_dims]
        if recipe is not None:
            if recipe not in RECIPES:
                raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
            data.update(RECIPES[recipe])
        if budget is not None:
            if budget not in BUDGETS:
                raise ValueError(f"unknown budget {budget!r}; valid: {', '.join(BUDGETS)}")
            data.update(BUDGETS[budget])
        data.update({k: v for k, v in given.items() if v is not None})
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def extra_augment(self) -> ExtraAugment:
        """The augmentation beyond crop+flip, as the batched transforms take it."""
        return ExtraAugment(rot90=self.rot90, permute_axes=self.permute_axes, affine_deg=self.affine_deg,
                            affine_scale=self.affine_scale, intensity=self.intensity,
                            noise_std=self.noise_std)

    def model_options(self) -> dict[str, Any]:
        """The options that must match between a checkpoint and a resumed run."""
        return {"arch": self.arch, "loss": self.loss, "head": self.head, "attention": self.attention,
                "cbam_kernel": self.cbam_kernel, "embedding": self.embedding}


def _check_types(config: TrainConfig) -> None:
    """Refuse a field whose value is not of its declared type (``--set tta=maybe``, a JSON string for a
    number, ...): bool fields take true/false only, int fields whole numbers, float fields numbers."""
    for f in fields(config):
        if f.name in ("arch", "betas"):
            continue
        value = getattr(config, f.name)
        declared = str(f.type).replace(" ", "")
        optional = declared.endswith("|None")
        base = declared.removesuffix("|None")
        if value is None:
            if not optional:
                raise ValueError(f"{f.name} must be set (a {base}), got null")
            continue
        if base == "bool":
            ok, want = isinstance(value, bool), "true or false"
        elif base == "int":
            ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), "a whole number"
        elif base == "float":
            ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        elif base == "str":
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise ValueError(f"{f.name} must be {want}{' or null' if optional else ''}, got {value!r}")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    check_option(name, value, valid)
