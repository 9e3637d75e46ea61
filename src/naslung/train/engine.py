"""Train one model on one test fold under the leak-free protocol.

``fit`` (docs/CONTRACTS.md) does, in order:

1. split: test fold | inner validation (whole scans, ~15 % per class of the training folds) | train;
2. train with AdamW on augmented random crops (the recipe: :class:`TrainConfig`; ``--recipe paper`` is
   section 4.1.3's Adam, lr 2e-4, betas (0.5, 0.999), random crops + flips);
3. after every epoch, predict the validation split; :func:`select_epoch` picks the checkpoint from the
   validation history alone (best F1 or accuracy, ties -> earlier epoch);
4. once training ends, load the chosen weights and predict the test fold a single time.

The test rows are not even copied out of the dataset before step 4, so neither training nor selection
can see them. The weights start from a random init (seeded by ``config.seed``) unless ``init`` names
trained weights (:mod:`naslung.train.init`; ``config.json`` records which). A run folder holds
``config.json``, ``epochs.jsonl``, ``last.pt``, ``best.pt``, ``predictions.csv/.json`` and, once finished,
``result.json``. ``resume=True`` continues from ``last.pt``
and gives the same numbers as an uninterrupted run (CPU; the global and explicit RNG states travel in
the checkpoint).

The pieces: one epoch in :mod:`naslung.train.epoch`, checkpoints and resume in :mod:`naslung.train.resume`,
probabilities and metrics in :mod:`naslung.train.inference`, ``result.json`` in :mod:`naslung.train.result`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from naslung import schemas
from naslung.allocator import keep_freed_memory
from naslung.atomic import append_jsonl, write_json_atomic
from naslung.data.dataset import NoduleDataset
from naslung.models.cost import count_parameters
from naslung.progress import Progress, tracked
from naslung.train.checkpoint import load_checkpoint
from naslung.train.config import TrainConfig
from naslung.train.ema import ModelEMA
from naslung.train.epoch import class_weights, steps_per_epoch, stop_early, train_epoch
from naslung.train.guards import at_epoch, run_folder
from naslung.train.inference import channels_last_applies, metrics_of, predict_proba, predictions_of
from naslung.train.init import WeightInit, apply_init, check_init, init_record
from naslung.train.predictions import write_predictions
from naslung.train.result import TrainResult
from naslung.train.resume import check_out_dir, restore_state, rewrite_log, save_state
from naslung.train.rundir import RunDir
from naslung.train.schedule import lambda_gamma, lr_factor
from naslung.train.selection import select_epoch
from naslung.train.splits import Split, inner_split

#: Progress task of the batches of the current epoch.
BATCHES_TASK = "  batches"


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
    from naslung.models.blocks.cbam import set_spatial_fft
    from naslung.models.factory import build_model

    model = build_model(config.spec, attention=config.attention, head=config.head, spatial_dims=spatial_dims,
                        cbam_kernel=config.cbam_kernel, embedding=config.embedding)
    set_spatial_fft(model, config.fft_gates)
    options: dict[str, Any] = {}
    if class_weight is not None:
        options["class_weight"] = class_weight
    if config.loss == "asoftmax" and total_iterations is not None:
        options["gamma"] = lambda_gamma(total_iterations, config.lambda_floor_at, config.lambda_schedule)
    return model, build_criterion(config.loss, model, **options)


def fit(
    dataset: NoduleDataset,
    config: TrainConfig,
    test_fold: int | None = None,
    out_dir: str | Path | None = None,
    resume: bool | str = False,
    *,
    progress: Progress | None = None,
    source: str | None = None,
    init: WeightInit | None = None,
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
        init: trained weights to start from (:mod:`naslung.train.init`); None (the default): a random init.
            Checked against ``config``, the data and ``test_fold`` first; recorded in ``config.json``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_init(init, config, dataset, [test_fold], source)
    out = Path(out_dir) if out_dir is not None else None
    if resume == "auto":
        resume = out is not None and RunDir(out).started()
    elif not isinstance(resume, bool):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if out is not None:  # one writer per run folder, and never a resume against other data
        with run_folder(out, dataset):
            if resume:
                _check_same_init(out, init)
            finished = check_out_dir(out, config, test_fold, resume)
            if finished is not None:
                return finished
            with _threads(config.num_threads):
                return _fit(dataset, config, test_fold, out, resume, progress, source, init)
    with _threads(config.num_threads):
        return _fit(dataset, config, test_fold, out, resume, progress, source, init)


def _check_same_init(out: Path, init: WeightInit | None) -> None:
    """Refuse to resume (or read back) a run that started from other weights than ``init``."""
    from naslung.train.checkpoint import CheckpointError

    run = RunDir(out)
    if not run.config.is_file():
        return
    recorded = run.read_config().get("init")  # runs written before "init" existed started at random
    if recorded != init_record(init):
        def text(r: dict[str, Any] | None) -> str:
            if r is None:
                return "a random init"
            return f"--init {r.get('model')}" + (f"/{r['member']}" if r.get("member") else "")
        raise CheckpointError(f"{out}: this run started from {text(recorded)}, this command asks for "
                              f"{text(init_record(init))}; use another --out")


def _fit(dataset: NoduleDataset, config: TrainConfig, test_fold: int | None, out: Path | None, resume: bool,
         progress: Progress | None, source: str | None, init: WeightInit | None = None) -> TrainResult:
    started = time.perf_counter()
    run = RunDir(out) if out is not None else None
    device = resolve_device(config.device)
    keep_freed_memory()  # page faults cost 4-15 % of a CPU step (naslung.allocator)
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
        apply_init(model, init)  # after the random init, so the RNG stream is the same either way
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
            history, seconds_before = restore_state(run.last, device, model, criterion, optimizer, scheduler,
                                                    ema, generator, np_rng, config, test_fold)
            best_state = load_checkpoint(run.best, map_location=device)["model"]
        params = count_parameters(model)
        if out is not None:
            _write_config(out, config, test_fold, split, dataset, model, params, device, source, init)
            rewrite_log(run.epochs_log, history)

        with tracked(progress, f"{config.arch} fold {test_fold}", config.epochs) as epoch_done:
            if history:
                epoch_done(len(history))
            for epoch in range(len(history) + 1, config.epochs + 1):
                t0 = time.perf_counter()
                with tracked(progress, BATCHES_TASK, steps) as batch_done:
                    train_loss, train_acc = at_epoch(epoch, train_epoch)(
                        model, criterion, optimizer, train_x, train_y, size, config, generator, np_rng,
                        batch_done, scheduler, ema)
                val_metrics = metrics_of(labels[split.val].numpy(),
                                         predict_proba(evaluated, val_x, size, config.eval_batch_size,
                                                       config.channels_last, config.tta))
                lam = getattr(criterion, "lambda_", None)
                history.append({
                    "epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                    "val": val_metrics, "lambda": float(lam) if lam is not None else None,
                    "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                })
                # The chosen epoch is always the previous choice or this one (a floor only narrows the
                # candidates once, at the first epoch that reaches it), so best_state stays the chosen one.
                chosen = select_epoch([h["val"] for h in history], config.select_metric,
                                      config.select_min_balanced_accuracy)
                if chosen == len(history) - 1:
                    best_state = copy.deepcopy(evaluated.state_dict())
                if out is not None:
                    save_state(out, epoch, config, test_fold, model, criterion, optimizer, generator, np_rng,
                               history, chosen, best_state, seconds_before + time.perf_counter() - started,
                               is_best=chosen == len(history) - 1, scheduler=scheduler, ema=ema)
                    append_jsonl(run.epochs_log, history[-1])
                epoch_done(loss=train_loss, val_acc=val_metrics["accuracy"], val_f1=val_metrics["f1"])
                if stop_early(history, chosen, config.patience):
                    break

    chosen = select_epoch([h["val"] for h in history], config.select_metric,
                          config.select_min_balanced_accuracy)
    assert best_state is not None
    model.load_state_dict(best_state)
    val = predictions_of(dataset, split.val, predict_proba(model, val_x, size, config.eval_batch_size,
                                                           config.channels_last, config.tta))
    test = None
    if split.test.size:
        # The single look at the test fold.
        test_x = all_images[split.test].to(device)
        test = predictions_of(dataset, split.test, predict_proba(model, test_x, size, config.eval_batch_size,
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


def _write_config(out: Path, config: TrainConfig, test_fold: int | None, split: Split, dataset: NoduleDataset,
                  model: nn.Module, params: int, device: torch.device, source: str | None,
                  init: WeightInit | None = None) -> None:
    from naslung.fingerprint import fingerprint_of
    from naslung.provenance import provenance

    write_json_atomic(RunDir(out).config, {
        "schema": schemas.TRAIN_CONFIG, "schema_version": 1,
        "config": config.to_dict(), "test_fold": test_fold, "init": init_record(init),
        "model_config": model.config, "params": params,
        "split": {**split.sizes(), "val_nodule_ids": [str(n) for n in dataset.nodule_id[split.val]]},
        "protocol": "inner validation split of the training folds picks the epoch; test fold evaluated once",
        "dataset": {"source": source, "n": len(dataset), "size": dataset.size, "margin": dataset.margin,
                    "spatial_dims": dataset.spatial_dims, "source_kind": dataset.source_kind,
                    "provenance": dataset.attrs.get("provenance"),
                    "fingerprint": fingerprint_of(dataset)},
        "provenance": {**provenance(), "device": str(device), "threads": torch.get_num_threads()},
    })


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
