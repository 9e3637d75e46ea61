"""Training checkpoints: a plain dict, written atomically with ``torch.save``.

A checkpoint stores the model's init arguments (``model.config``), so it is rebuilt with
``model_from_config`` rather than unpickled, plus everything a resumed run needs to continue exactly:

    schema, schema_version, spec, model_config, options (TrainConfig dict), model_options (spec, loss,
    head, attention), test_fold, epoch (finished epochs),
    model, criterion, optimizer (state dicts), rng (torch generator + global torch + numpy states),
    best (selected epoch so far and its validation metrics), history (one record per epoch)

``best.pt`` holds the same keys (no optimizer) for the selected epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from naslung import schemas
from naslung.atomic import atomic_path

SCHEMA = schemas.CHECKPOINT
SCHEMA_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not match the run that wants it."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus schema tags) to ``path`` atomically."""
    payload = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; clear errors for anything else.

    Loads with ``weights_only=True``: checkpoints hold tensors and plain Python values only, so a
    foreign pickle cannot run code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: not a naslung checkpoint")
    if int(state.get("schema_version", -1)) > SCHEMA_VERSION:
        raise CheckpointError(f"{path}: checkpoint schema {state['schema_version']} is newer than this "
                              f"naslung ({SCHEMA_VERSION})")
    return state


def check_compatible(state: dict[str, Any], options: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` when a checkpoint was trained with other model options.

    ``options`` is ``TrainConfig.model_options()`` of the run that wants to resume (spec, loss, head,
    attention); a mismatch would silently load weights into the wrong network.
    """
    saved = state.get("model_options", {})
    # A checkpoint written before an option existed used the then only choice.
    legacy = {"cbam_kernel": 7, "embedding": "relu"}
    for key, want in options.items():
        have = state.get("spec") if key == "arch" else saved.get(key, legacy.get(key))
        if have != want:
            raise CheckpointError(
                f"{path}: checkpoint was trained with {key}={have!r} but this run asks for {key}={want!r}; "
                f"use another --out folder or drop --resume")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model of a checkpoint (a ``.pt`` file, or a run folder -> its ``best.pt``), eval mode."""
    from naslung.models.factory import model_from_config

    path = Path(path)
    if path.is_dir():
        from naslung.train.rundir import RunDir

        path = RunDir(path).best
    state = load_checkpoint(path, map_location=map_location)
    model = model_from_config(state["model_config"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match spec {state.get('spec')} ({exc})") from exc
    return model.to(map_location).eval()
