"""Train one model on one test fold under the leak-free protocol.

``fit`` (docs/CONTRACTS.md) does, in order:

1. split: test fold | inner validation (whole scans, ~15 % per class of the training folds) | train;
2. train with Adam (lr 2e-4, betas (0.5, 0.999), paper section 4.1.3) on random crops + flips;
3. after every epoch, predict the validation split; :func:`select_epoch` picks the checkpoint from the
   validation history alone (best F1 or accuracy, ties -> earlier epoch);
4. once training ends, load the chosen weights and predict the test fold a single time.

The test rows are not even copied out of the dataset before step 4, so neither training nor selection
can see them. A run folder holds ``config.json``, ``epochs.jsonl``, ``last.pt``, ``best.pt``,
``predictions.csv/.json`` and, once finished, ``result.json``. ``resume=True`` continues from ``last.pt``
and gives the same numbers as an uninterrupted run (CPU; the global and explicit RNG states travel in
the checkpoint).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from naslung.atomic import append_jsonl, read_json, read_jsonl, write_json_atomic, write_text_atomic
from naslung.data.dataset import NoduleDataset
from naslung.models.cost import count_parameters
from naslung.progress import Progress, tracked
from naslung.train.augment import augment_crops, augment_stored, center_crop, flip_views, random_crop_flip
from naslung.train.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from naslung.train.config import TrainConfig
from naslung.train.ema import ModelEMA
from naslung.train.guards import at_epoch, check_finite_loss, run_folder
from naslung.train.predictions import Predictions, read_predictions, write_predictions
from naslung.train.rundir import RunDir
from naslung.train.schedule import lambda_gamma, lr_factor
from naslung.train.selection import select_epoch
from naslung.train.splits import Split, inner_split

RESULT_SCHEMA = "naslung-train-result"
RESULT_SCHEMA_VERSION = 1
#: TrainConfig fields that may change when resuming (they do not change the numbers, or only extend).
RESUME_FREE = ("epochs", "device", "num_threads", "eval_batch_size")
#: Progress task of the batches of the current epoch.
BATCHES_TASK = "  batches"


def resume_free(config: TrainConfig) -> tuple[str, ...]:
    """:data:`RESUME_FREE`, less ``epochs`` when a schedule follows the planned length of the run."""
    planned = config.lr_schedule != "constant" or (
        config.loss == "asoftmax" and config.lambda_schedule == "run")
    return tuple(k for k in RESUME_FREE if not (planned and k == "epochs"))


@dataclass
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes:
        spec: architecture string.
        test_fold: the test fold, or None for a development-only run (search).
        epoch: chosen epoch (1-based), picked on the validation split.
        val_metrics: validation metrics of the chosen epoch (``binary_metrics`` keys).
        test_metrics: test-fold metrics of the chosen epoch (None without a test fold).
        params: trainable parameters of the model.
        history: one record per epoch (train loss/accuracy, ``val`` metrics, lambda, seconds).
        val, test: per-nodule predictions of the chosen checkpoint.
        split: sizes of train / val / test.
        seconds: wall time of the whole run (summed over resumed pieces).
        out_dir: run folder, if any.
        model: the chosen model on CPU in eval mode (None when read back from disk).
    """

    spec: str
    test_fold: int | None
    epoch: int
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    params: int
    history: list[dict[str, Any]]
    val: Predictions
    test: Predictions | None
    split: dict[str, int]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` payload."""
        return {
            "schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION, "spec": self.spec,
            "test_fold": self.test_fold, "epoch": self.epoch, "epochs": len(self.history),
            "val_metrics": self.val_metrics, "test_metrics": self.test_metrics, "params": self.params,
            "split": self.split, "seconds": self.seconds, "config": self.config,
        }

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainResult:
        """Read a finished run folder back (without the model)."""
        run = RunDir(run_dir)
        run_dir, path = run.path, run.result
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: no result.json, the run has not finished")
        data = read_json(path, "training result")
        if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
            raise ValueError(f"{path}: not a naslung training result")
        test = read_predictions(run_dir, "test") if data["test_fold"] is not None else None
        return cls(spec=data["spec"], test_fold=data["test_fold"], epoch=data["epoch"],
                   val_metrics=data["val_metrics"], test_metrics=data["test_metrics"], params=data["params"],
                   history=read_jsonl(run.epochs_log), val=read_predictions(run_dir, "val"),
                   test=test, split=data["split"], seconds=data["seconds"], config=data.get("config", {}),
                   out_dir=run_dir)


#: Field defaults, so a run written before a field existed compares equal to that field's default.
_DEFAULTS = TrainConfig().to_dict()


def changed_options(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """TrainConfig fields that differ between a saved run's options and ``config``, except those that may
    change on resume (:func:`resume_free`); a field the saved run predates counts as its default."""
    now, free = config.to_dict(), resume_free(config)
    return sorted(k for k in now if k not in free and saved.get(k, _DEFAULTS.get(k)) != now[k])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU raises."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def data_split(dataset: NoduleDataset, config: TrainConfig, test_fold: int | None) -> Split:
    """The run's train / val / test rows; train and val never hold a test-fold row."""
    return inner_split(dataset.labels, dataset.seriesuid, dataset.fold, test_fold, config.val_fraction,
                       config.split_seed)


def build(config: TrainConfig, spatial_dims: int, total_iterations: int | None = None,
          class_weight: torch.Tensor | None = None) -> tuple[nn.Module, nn.Module]:
    """Model and criterion of ``config`` (weights from the global torch RNG; seed it first).

    ``total_iterations`` (the planned optimiser steps) ties A-Softmax's lambda schedule to the run
    (``config.lambda_schedule == "run"``); None keeps SphereFace's constants (e.g. inference only).
    """
    from naslung.losses import build_criterion
    from naslung.models.factory import build_model

    model = build_model(config.spec, attention=config.attention, head=config.head, spatial_dims=spatial_dims,
                        cbam_kernel=config.cbam_kernel)
    options: dict[str, Any] = {}
    if class_weight is not None:
        options["class_weight"] = class_weight
    if config.loss == "asoftmax" and total_iterations is not None:
        options["gamma"] = lambda_gamma(total_iterations, config.lambda_floor_at, config.lambda_schedule)
    return model, build_criterion(config.loss, model, **options)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the last batch may be smaller)."""
    return -(-int(n_train) // int(batch_size))


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse class frequency ``n / (K n_c)`` of the training labels, K the classes present (1 if absent)."""
    counts = torch.bincount(labels.cpu(), minlength=2).double()
    present = int((counts > 0).sum())
    weights = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1)), torch.ones_like(counts))
    return weights.float()


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, size: int, batch_size: int,
                  channels_last: bool = False, tta: bool = False) -> np.ndarray:
    """Malignancy probability ``softmax(logits)[:, 1]`` of centre crops; ``images`` is ``(N, *S)``.

    For the angular head the logits are ``|x| cos(theta_j)``; ``p >= 0.5`` is the argmax decision. With
    ``tta`` the probability is the mean over the crop flipped along every subset of its axes (8 views in
    3-D, 4 in 2-D).
    """
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        crop = center_crop(images[start:start + batch_size], size)
        views = flip_views(crop) if tta else [crop]
        prob = sum(torch.softmax(model(_format(v, channels_last)).float(), dim=1)[:, 1] for v in views)
        out.append((prob / len(views)).cpu())
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().numpy()


def fit(
    dataset: NoduleDataset,
    config: TrainConfig,
    test_fold: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool | str = False,
    *,
    progress: Progress | None = None,
    source: str | None = None,
) -> TrainResult:
    """Train ``config`` with ``test_fold`` held out; see the module docstring for the protocol.

    Args:
        dataset: crops in memory (``load_dataset``); its ``spatial_dims`` decides 2-D or 3-D.
        config: the training configuration.
        test_fold: LUNA16 fold to test once at the end; None: no test (search on development data).
        out_dir: run folder; None trains in memory only (no files).
        resume: continue ``out_dir/last.pt`` (a finished run is read back, not retrained); ``"auto"``:
            resume when the run folder holds a run (:meth:`RunDir.started`), else start fresh.
        progress: receives the epochs (task ``"<arch> fold <k>"``, with loss and validation scores) and the
            batches of each epoch (task ``"  batches"``); None reports nothing.
        source: where the dataset came from (recorded in ``config.json``).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    out = Path(out_dir) if out_dir is not None else None
    if resume == "auto":
        resume = out is not None and RunDir(out).started()
    elif not isinstance(resume, bool):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if out is not None:  # one writer per run folder, and never a resume against other data
        with run_folder(out, dataset):
            finished = _check_out_dir(out, config, test_fold, resume)
            if finished is not None:
                return finished
            with _threads(config.num_threads):
                return _fit(dataset, config, test_fold, out, resume, progress, source)
    with _threads(config.num_threads):
        return _fit(dataset, config, test_fold, out, resume, progress, source)


def _fit(dataset: NoduleDataset, config: TrainConfig, test_fold: int | None, out: Path | None, resume: bool,
         progress: Progress | None, source: str | None) -> TrainResult:
    started = time.perf_counter()
    run = RunDir(out) if out is not None else None
    device = resolve_device(config.device)
    split = data_split(dataset, config, test_fold)
    size, dims = dataset.size, dataset.spatial_dims
    all_images = torch.from_numpy(np.ascontiguousarray(dataset.images, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    # Only the development rows reach the device here; the test rows are copied after training.
    train_x, train_y = all_images[split.train].to(device), labels[split.train].to(device)
    val_x = all_images[split.val].to(device)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    steps = steps_per_epoch(split.train.size, config.batch_size)
    total_iterations = steps * config.epochs
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        model, criterion = build(config, dims, total_iterations,
                                 class_weights(train_y) if config.class_balance else None)
        model.to(device)
        criterion.to(device)
        if channels_last_applies(config.channels_last, dims):
            model.to(memory_format=torch.channels_last_3d)
        # AdamW: with weight_decay 0 (the paper) it is exactly Adam; with decay, the decay is decoupled.
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                      weight_decay=config.weight_decay)
        warmup = round(config.warmup_epochs * steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: lr_factor(it, total_iterations, warmup, config.lr_schedule))
        ema = ModelEMA(model, config.ema_decay) if config.ema_decay is not None else None
        evaluated = ema.shadow if ema is not None else model
        generator = torch.Generator().manual_seed(config.seed)
        np_rng = np.random.default_rng([config.seed, 1])
        history: list[dict[str, Any]] = []
        best_state: dict[str, Any] | None = None
        seconds_before = 0.0
        if resume and run is not None and run.last.exists():
            state = load_checkpoint(run.last, map_location=device)
            _check_resume(state, config, test_fold, run.last)
            model.load_state_dict(state["model"])
            criterion.load_state_dict(state["criterion"])
            optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            generator.set_state(state["rng"]["generator"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            np_rng.bit_generator.state = state["rng"]["numpy"]
            history = list(state["history"])
            seconds_before = float(state.get("seconds", 0.0))
            best_state = load_checkpoint(run.best, map_location=device)["model"]
        params = count_parameters(model)
        if out is not None:
            _write_config(out, config, test_fold, split, dataset, model, params, device, source)
            _rewrite_log(run.epochs_log, history)

        with tracked(progress, f"{config.arch} fold {test_fold}", config.epochs) as epoch_done:
            if history:
                epoch_done(len(history))
            for epoch in range(len(history) + 1, config.epochs + 1):
                t0 = time.perf_counter()
                with tracked(progress, BATCHES_TASK, steps) as batch_done:
                    train_loss, train_acc = at_epoch(epoch, _train_epoch)(
                        model, criterion, optimizer, train_x, train_y, size, config, generator, np_rng,
                        batch_done, scheduler, ema)
                val_metrics = _metrics(labels[split.val].numpy(),
                                       predict_proba(evaluated, val_x, size, config.eval_batch_size,
                                                     config.channels_last, config.tta))
                lam = getattr(criterion, "lambda_", None)
                history.append({
                    "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                    "val": val_metrics, "lambda": float(lam) if lam is not None else None,
                    "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                })
                chosen = select_epoch([h["val"] for h in history], config.select_metric)
                if chosen == len(history) - 1:
                    best_state = copy.deepcopy(evaluated.state_dict())
                if out is not None:
                    _save(out, epoch, config, test_fold, model, criterion, optimizer, generator, np_rng,
                          history, chosen, best_state, seconds_before + time.perf_counter() - started,
                          is_best=chosen == len(history) - 1, scheduler=scheduler, ema=ema)
                    append_jsonl(run.epochs_log, history[-1])
                epoch_done(loss=train_loss, val_acc=val_metrics["accuracy"], val_f1=val_metrics["f1"])
                if stop_early(history, chosen, config.patience):
                    break

    chosen = select_epoch([h["val"] for h in history], config.select_metric)
    assert best_state is not None
    model.load_state_dict(best_state)
    val = _predictions(dataset, split.val, predict_proba(model, val_x, size, config.eval_batch_size,
                                                         config.channels_last, config.tta))
    test = None
    if split.test.size:
        # The single look at the test fold.
        test_x = all_images[split.test].to(device)
        test = _predictions(dataset, split.test, predict_proba(model, test_x, size, config.eval_batch_size,
                                                               config.channels_last, config.tta))
    result = TrainResult(
        spec=config.arch, test_fold=test_fold, epoch=history[chosen]["epoch"], val_metrics=val.metrics(),
        test_metrics=test.metrics() if test is not None else None, params=params, history=history, val=val,
        test=test, split=split.sizes(), seconds=seconds_before + time.perf_counter() - started,
        config=config.to_dict(), out_dir=out, model=model.cpu().eval())
    if out is not None:
        write_predictions(out, {"val": val, "test": test})
        write_json_atomic(run.result, result.to_dict())
    return result


def stop_early(history: list[dict[str, Any]], chosen: int, patience: int | None) -> bool:
    """True when the chosen (best validation) epoch lies ``patience`` or more epochs in the past."""
    return patience is not None and len(history) - 1 - chosen >= patience


def _train_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 images: torch.Tensor, labels: torch.Tensor, size: int, config: TrainConfig,
                 generator: torch.Generator, np_rng: np.random.Generator,
                 on_batch: Callable[[], None], scheduler: Any = None,
                 ema: ModelEMA | None = None) -> tuple[float, float]:
    """One pass over the shuffled training rows; returns mean loss and accuracy (augmented inputs)."""
    model.train()
    criterion.train()
    extra = config.extra_augment()
    order = torch.from_numpy(np_rng.permutation(images.shape[0])).to(images.device)
    total_loss, correct, seen = 0.0, 0, 0
    for start in range(0, order.numel(), config.batch_size):
        idx = order[start:start + config.batch_size]
        if config.augment:
            stored = augment_stored(images[idx], extra, generator)
            x = augment_crops(random_crop_flip(stored, size, generator, max_shift=config.max_shift), extra,
                              generator)
        else:
            x = center_crop(images[idx], size)
        x = _format(x, config.channels_last)
        y = labels[idx]
        features = model.forward_features(x)
        loss = criterion(features, y)
        check_finite_loss(loss, start // config.batch_size + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        with torch.no_grad():
            correct += int((model.forward_head(features).argmax(1) == y).sum())
        total_loss += float(loss.detach()) * y.numel()
        seen += y.numel()
        on_batch()
    return total_loss / seen, correct / seen


def _metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    from naslung.metrics import binary_metrics

    return binary_metrics(y, (prob >= 0.5).astype(np.int64), prob)


def _predictions(dataset: NoduleDataset, rows: np.ndarray, prob: np.ndarray) -> Predictions:
    return Predictions(nodule_id=np.asarray(dataset.nodule_id[rows]).astype(str),
                       seriesuid=np.asarray(dataset.seriesuid[rows]).astype(str),
                       fold=np.asarray(dataset.fold[rows], dtype=np.int64),
                       label=np.asarray(dataset.labels[rows], dtype=np.int64), prob=prob)


def channels_last_applies(channels_last: bool, dims: int) -> bool:
    """Whether the channels-last option takes effect for ``dims`` spatial axes: 3-D only.

    2-D channels_last is never used. torch 2.13.0+cpu on AVX2-only x86 (no AVX-512) corrupts the heap in
    oneDNN's 2-D channels-last backward of strided 1x1 convolutions ("double free or corruption", SIGABRT,
    or a hang). Reproduction, repeated a few hundred times::

        m = nn.Conv2d(4, 8, 1, stride=2).to(memory_format=torch.channels_last)
        x = torch.rand(16, 4, 16, 16, requires_grad=True).contiguous(memory_format=torch.channels_last)
        m(x).sum().backward()

    It does not happen with ``torch.backends.mkldnn.enabled = False``, in contiguous format, or in 3-D with
    ``channels_last_3d``; it does with ``ATEN_CPU_CAPABILITY=default``. The 2-D models are tiny (32x32
    slices), so contiguous costs little; ``tests/train/test_default_path.py`` runs hundreds of steps on the
    default path in 2-D and 3-D.
    """
    return bool(channels_last) and dims == 3


def _format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last_applies(channels_last, x.dim() - 2):
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous()


def _save(out: Path, epoch: int, config: TrainConfig, test_fold: int | None, model: nn.Module,
          criterion: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
          np_rng: np.random.Generator, history: list[dict[str, Any]], chosen: int,
          best_state: dict[str, Any] | None, seconds: float, is_best: bool, scheduler: Any = None,
          ema: ModelEMA | None = None) -> None:
    """``best.pt`` first, then ``last.pt``: a kill between the two redoes this epoch identically."""
    best = {"epoch": history[chosen]["epoch"], "val": history[chosen]["val"]}
    common = {"spec": config.arch, "model_config": model.config, "options": config.to_dict(),
              "model_options": config.model_options(), "test_fold": test_fold, "best": best}
    run = RunDir(out)
    if is_best:
        save_checkpoint(run.best, {**common, "epoch": epoch, "model": best_state,
                                          "criterion": criterion.state_dict()})
    cuda_state = torch.cuda.get_rng_state() if next(model.parameters()).is_cuda else None
    save_checkpoint(run.last, {
        **common, "epoch": epoch, "model": model.state_dict(), "criterion": criterion.state_dict(),
        "optimizer": optimizer.state_dict(), "history": history, "seconds": seconds,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "ema": ema.state_dict() if ema is not None else None,
        "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state(), "cuda": cuda_state,
                "numpy": np_rng.bit_generator.state},
    })


def _check_resume(state: dict[str, Any], config: TrainConfig, test_fold: int | None, path: Path) -> None:
    check_compatible(state, config.model_options(), path)
    if state.get("test_fold") != test_fold:
        raise CheckpointError(f"{path}: checkpoint has test fold {state.get('test_fold')}, "
                              f"this run {test_fold}")
    saved = state.get("options", {})
    now = config.to_dict()
    differ = changed_options(saved, config)
    if differ:
        raise CheckpointError(f"{path}: cannot resume with changed options {differ} "
                              f"(was {[saved.get(k) for k in differ]}, now {[now[k] for k in differ]})")
    if int(state["epoch"]) > config.epochs:
        raise CheckpointError(f"{path}: checkpoint already has {state['epoch']} epochs, "
                              f"more than --epochs {config.epochs}")


def _check_out_dir(out: Path, config: TrainConfig, test_fold: int | None, resume: bool) -> TrainResult | None:
    """Refuse to overwrite a run; on resume, return a finished run that matches ``config``."""
    run = RunDir(out)
    if not resume:
        if run.started():
            raise FileExistsError(f"{out}: already holds a training run; pass --resume to continue it or "
                                  f"choose another --out")
        return None
    if run.finished():
        done = run.load_result()
        differ = changed_options(done.config, config)
        if done.spec != config.arch:
            raise CheckpointError(f"{out}: finished run has spec {done.spec}, "
                                  f"this run asks for {config.arch}")
        if differ or done.test_fold != test_fold:
            raise CheckpointError(f"{out}: finished run differs in {differ or ['test_fold']}; "
                                  "use another --out")
        if len(done.history) >= config.epochs:
            return done
        # More epochs requested than the finished run had: continue from last.pt.
        run.result.unlink()
    return None


def _write_config(out: Path, config: TrainConfig, test_fold: int | None, split: Split, dataset: NoduleDataset,
                  model: nn.Module, params: int, device: torch.device, source: str | None) -> None:
    from naslung.fingerprint import fingerprint_of
    from naslung.provenance import provenance

    write_json_atomic(RunDir(out).config, {
        "schema": "naslung-train-config", "schema_version": 1,
        "config": config.to_dict(), "test_fold": test_fold, "model_config": model.config, "params": params,
        "split": {**split.sizes(), "val_nodule_ids": [str(n) for n in dataset.nodule_id[split.val]]},
        "protocol": "inner validation split of the training folds picks the epoch; test fold evaluated once",
        "dataset": {"source": source, "n": len(dataset), "size": dataset.size, "margin": dataset.margin,
                    "spatial_dims": dataset.spatial_dims, "provenance": dataset.attrs.get("provenance"),
                    "fingerprint": fingerprint_of(dataset)},
        "provenance": {**provenance(), "device": str(device), "threads": torch.get_num_threads()},
    })


def _rewrite_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Make ``epochs.jsonl`` equal the checkpoint's history (drops epochs logged after the last save)."""
    import json

    write_text_atomic(path, "".join(json.dumps(h, default=str) + "\n" for h in history))


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the run and restore the previous value afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
