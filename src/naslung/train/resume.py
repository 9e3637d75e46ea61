"""Checkpoints and resume: what a run folder's ``last.pt``/``best.pt`` hold and when a run may continue.

``last.pt`` holds everything needed to continue bit for bit on CPU (model, criterion, optimiser, scheduler,
EMA, history and every RNG state); ``best.pt`` the weights of the epoch chosen on the validation split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from naslung.atomic import write_text_atomic
from naslung.train.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from naslung.train.config import TrainConfig
from naslung.train.ema import ModelEMA
from naslung.train.rundir import RunDir

if TYPE_CHECKING:
    from naslung.train.result import TrainResult

#: TrainConfig fields that may change when resuming (they do not change the numbers, or only extend).
#: Every other field must match, ``amp`` included: bf16 autocast changes the numbers on CUDA.
RESUME_FREE = ("epochs", "device", "num_threads", "eval_batch_size")


def resume_free(config: TrainConfig) -> tuple[str, ...]:
    """:data:`RESUME_FREE`, less ``epochs`` when a schedule follows the planned length of the run."""
    planned = config.lr_schedule != "constant" or (
        config.loss == "asoftmax" and config.lambda_schedule == "run")
    return tuple(k for k in RESUME_FREE if not (planned and k == "epochs"))


#: Field defaults, so a run written before a field existed compares equal to that field's default.
_DEFAULTS = TrainConfig().to_dict()


def changed_options(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """TrainConfig fields that differ between a saved run's options and ``config``, except those that may
    change on resume (:func:`resume_free`); a field the saved run predates counts as its default."""
    now, free = config.to_dict(), resume_free(config)
    return sorted(k for k in now if k not in free and saved.get(k, _DEFAULTS.get(k)) != now[k])


def save_state(out: Path, epoch: int, config: TrainConfig, test_fold: int | None, model: nn.Module,
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


def restore_state(path: Path, device: torch.device, model: nn.Module, criterion: nn.Module,
                  optimizer: torch.optim.Optimizer, scheduler: Any, ema: ModelEMA | None,
                  generator: torch.Generator, np_rng: np.random.Generator, config: TrainConfig,
                  test_fold: int | None) -> tuple[list[dict[str, Any]], float]:
    """Load ``last.pt`` into the training objects (after :func:`check_resume`); returns the history and the
    seconds already spent."""
    state = load_checkpoint(path, map_location=device)
    check_resume(state, config, test_fold, path)
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
    return list(state["history"]), float(state.get("seconds", 0.0))


def check_resume(state: dict[str, Any], config: TrainConfig, test_fold: int | None, path: Path) -> None:
    """Refuse a checkpoint of another model, test fold, options or a longer run than ``config``."""
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


def check_out_dir(out: Path, config: TrainConfig, test_fold: int | None, resume: bool) -> TrainResult | None:
    """Refuse to overwrite a run; on resume, return a finished run that matches ``config``."""
    run = RunDir(out)
    if not resume:
        if run.started():
            raise FileExistsError(f"{out}: already holds a training run; pass --resume to continue it or "
                                  f"choose another --out")
        return None
    if run.finished():
        from naslung.train.result import TrainResult

        done = TrainResult.load(run.path)
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


def rewrite_log(path: Path, history: list[dict[str, Any]]) -> None:
    """Make ``epochs.jsonl`` equal the checkpoint's history (drops epochs logged after the last save)."""
    write_text_atomic(path, "".join(json.dumps(h, default=str) + "\n" for h in history))
