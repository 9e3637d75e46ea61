"""Options shared by `naslung train` and `naslung cv`: help texts and the command's resolved TrainConfig."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer

from naslung import schemas
from naslung.cli.common import check_threads
from naslung.options import (
    ATTENTIONS,
    DEVICES,
    HEAD_FOR_LOSS,
    LOSSES,
    METRICS,
    SEED_MAX,
    choices,
    parse_field_values,
)
from naslung.train.config import BUDGETS, TrainConfig

LOSS_HELP = choices([f"{loss} ({HEAD_FOR_LOSS[loss]} head)" for loss in LOSSES])
ATTENTION_HELP = choices(ATTENTIONS)
BUDGET_HELP = "epoch budget: " + "; ".join(
    f"{k}: " + (", ".join(f"{f} {v}" for f, v in fields.items()) or "the defaults")
    for k, fields in BUDGETS.items())
MEMBERS_HELP = "members.json of `naslung search select`: cross-validate each member with its search settings"
CV_OUT_HELP = "cv folder (default runs/cv_<arch>_...; with --members <search>/members_cv/<member>)"
RECIPE_HELP = "naslung (the defaults: cosine lr, CT augmentation, EMA, TTA) or paper (section 4.1.3)"
SET_HELP = "any TrainConfig field as FIELD=VALUE (repeatable), e.g. --set ema_decay=0.99 --set tta=false"

#: TrainConfig's defaults, shown in help texts (never restated as option defaults).
_D = TrainConfig()
HELP = {
    "arch": f"architecture, paper notation (default {_D.arch})",
    "epochs": f"planned epochs (default {_D.epochs})",
    "batch": f"(default {_D.batch_size})",
    "loss": f"{LOSS_HELP} (default {_D.loss})",
    "attention": f"{ATTENTION_HELP} (default {_D.attention})",
    "seed": f"init/shuffle/augmentation seed (default {_D.seed})",
    "split_seed": f"inner validation split seed (default {_D.split_seed})",
    "device": f"{choices(DEVICES)} (default {_D.device})",
    "val_fraction": f"inner validation share (default {_D.val_fraction})",
    "select": f"epoch picked by val {choices(METRICS)} (default {_D.select_metric})",
    "lr": f"peak learning rate (default {_D.lr})",
    "max_shift": f"crop shift, -1: anywhere in the margin (default {_D.max_shift})",
    "config": "TrainConfig JSON (or a run's config.json)",
}


#: The shared options, declared once; ``naslung train`` and ``naslung cv`` take them as parameters with these
#: defaults and hand them on as one :class:`TrainOptions`. (``--threads`` is declared by each command: its
#: help differs.)
ARCH = typer.Option(None, "--arch", help=HELP["arch"])
BUDGET = typer.Option(None, "--budget", help=BUDGET_HELP)
RECIPE = typer.Option(None, "--recipe", help=RECIPE_HELP)
EPOCHS = typer.Option(None, "--epochs", help=HELP["epochs"])
BATCH = typer.Option(None, "--batch-size", help=HELP["batch"])
#: ``--batch``, the former name of ``--batch-size`` (hidden).
BATCH_ALIAS = typer.Option(None, "--batch", hidden=True)
LOSS = typer.Option(None, "--loss", help=HELP["loss"])
ATTENTION = typer.Option(None, "--attention", help=HELP["attention"])
SEED = typer.Option(None, "--seed", min=0, max=SEED_MAX, help=HELP["seed"])
SPLIT_SEED = typer.Option(None, "--split-seed", min=0, max=SEED_MAX, help=HELP["split_seed"])
DEVICE = typer.Option(None, "--device", help=HELP["device"])
VAL_FRACTION = typer.Option(None, "--val-fraction", help=HELP["val_fraction"])
SELECT = typer.Option(None, "--select", help=HELP["select"])
LR = typer.Option(None, "--lr", help=HELP["lr"])
MAX_SHIFT = typer.Option(None, "--max-shift", help=HELP["max_shift"])
CHANNELS_LAST = typer.Option(None, "--channels-last/--no-channels-last", help="3-D only")
CONFIG_FILE = typer.Option(None, "--config", help=HELP["config"])
SETS = typer.Option(None, "--set", help=SET_HELP)
INIT_HELP = ("start from the weights of bundled model NAME (NAME/MEMBER for an ensemble's member; naslung "
             "models list) instead of a random init; never the default. --arch defaults to the model's; a "
             "test fold the model was trained on is refused")
INIT = typer.Option(None, "--init", help=INIT_HELP)


@dataclass(frozen=True)
class TrainOptions:
    """The TrainConfig options of ``naslung train`` and ``naslung cv``, as the user gave them (None: not
    given, so the field keeps :class:`TrainConfig`'s default). One typed object in place of 17 keywords."""

    arch: str | None = None
    budget: str | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch: int | None = None
    loss: str | None = None
    attention: str | None = None
    seed: int | None = None
    split_seed: int | None = None
    device: str | None = None
    val_fraction: float | None = None
    select: str | None = None
    lr: float | None = None
    threads: int | None = None
    max_shift: int | None = None
    channels_last: bool | None = None
    config_file: Path | None = None
    sets: list[str] | None = None

    def config_fields(self) -> dict[str, Any]:
        """The TrainConfig fields the plain options give (None: not given), by field name."""
        return {"arch": self.arch, "epochs": self.epochs, "batch_size": self.batch, "loss": self.loss,
                "attention": self.attention, "seed": self.seed, "split_seed": self.split_seed,
                "device": self.device, "val_fraction": self.val_fraction, "select_metric": self.select,
                "lr": self.lr, "channels_last": self.channels_last, "num_threads": self.threads,
                "max_shift": None if self.max_shift is None or self.max_shift < 0 else self.max_shift}

    def given_besides(self, *allowed: str) -> list[str]:
        """The options given other than ``allowed`` (attribute names), e.g. for ``cv --members``."""
        return [f.name for f in fields(self)
                if f.name not in allowed and getattr(self, f.name) not in (None, [])]

    def resolve(self, data: Path | None = None) -> TrainConfig:
        """The run's TrainConfig: ``--config`` file, then ``--budget``, then the options given, then
        ``--set``.

        Options the user did not give are None and keep :class:`TrainConfig`'s default; ``--arch`` left
        unset takes the default of ``data``'s dimensionality (``naslung.train.config.DEFAULT_ARCHS``).
        """
        check_threads(self.threads)
        base = _read_config_file(self.config_file) if self.config_file is not None else {}
        given = self.config_fields()
        try:
            config = TrainConfig.resolve(base, self.budget, self.recipe, spatial_dims=_spatial_dims(data),
                                         **given)
            parsed = _parse_sets(self.sets) if self.sets else {}
        except (TypeError, ValueError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        for key, value in parsed.items():
            if given.get(key) is not None and given[key] != value:
                option = OPTION_OF.get(key, "--" + key.replace("_", "-"))
                raise typer.BadParameter(f"{key}={value!r} conflicts with {option} {given[key]!r}; give one "
                                         f"of them", param_hint="--set")
        try:
            return config.replace(**parsed) if parsed else config
        except (TypeError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--set") from exc

    def check_for_data(self, config: TrainConfig, dataset: Any, data: Path) -> None:
        """:func:`check_for_data` with these options."""
        check_for_data(config, dataset, data, max_shift=self.max_shift, channels_last=self.channels_last,
                       sets=self.sets)


#: The option of a TrainConfig field whose name differs from ``--<field>``.
OPTION_OF = {"select_metric": "--select", "num_threads": "--threads"}


def check_for_data(config: TrainConfig, dataset: Any, data: Path, *, max_shift: int | None = None,
                   channels_last: bool | None = None, sets: list[str] | None = None) -> None:
    """Refuse options the dataset cannot honour, given explicitly: ``--max-shift`` beyond the stored margin,
    ``--channels-last`` on 2-D crops (a ``typer.BadParameter`` naming the option and the file)."""
    parsed = _parse_sets(sets) if sets else {}
    shift_given = (max_shift is not None and max_shift >= 0) or parsed.get("max_shift") is not None
    if shift_given and config.max_shift is not None and config.max_shift > dataset.margin:
        raise typer.BadParameter(f"{config.max_shift} is beyond the margin {dataset.margin} stored in "
                                 f"{data}; use 0..{dataset.margin}, or -1 for anywhere in the margin",
                                 param_hint="--max-shift")
    if (channels_last or parsed.get("channels_last") is True) and dataset.spatial_dims != 3:
        raise typer.BadParameter(f"applies to 3-D crops only; {data} holds {dataset.spatial_dims}-D crops",
                                 param_hint="--channels-last")
    check_train_memory(config, dataset.size, dataset.spatial_dims)


def check_train_memory(config: TrainConfig, size: int, dims: int) -> None:
    """Refuse, before building it, an architecture whose training would not fit in the memory available
    (CPU runs; :func:`naslung.models.cost.check_memory`), naming ``--arch`` and the estimate."""
    import torch

    from naslung.models.cost import analytic_cost, check_memory

    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return
    cost = analytic_cost(config.arch, size=size, spatial_dims=dims, attention=config.attention,
                         head=config.head, cbam_kernel=config.cbam_kernel)
    try:
        check_memory(cost, config.arch, config.batch_size, config.eval_batch_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--arch") from None


def _spatial_dims(data: Path | None) -> int | None:
    """The dataset's ``spatial_dims`` attribute (None without a readable file: the load reports it)."""
    if data is None:
        return None
    from naslung.data.dataset import read_attrs
    from naslung.data.errors import DataError

    try:
        dims = read_attrs(data).get("spatial_dims")
    except (DataError, OSError):
        return None
    return int(dims) if dims in (2, 3) else None


def _read_config_file(path: Path) -> dict[str, Any]:
    """A TrainConfig as JSON: the object itself, or a run's ``config.json`` (its ``config`` entry)."""
    from naslung.atomic import read_json

    try:
        data = read_json(path, "training config")
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema is not None and schema != schemas.TRAIN_CONFIG:
        from naslung.outputs import describe

        raise typer.BadParameter(f"{path}: holds {describe(path)}, not a TrainConfig (give a JSON object of "
                                 f"TrainConfig fields or a run's config.json)", param_hint="--config")
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: not a JSON object of TrainConfig fields", param_hint="--config")
    return data


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set`` as TrainConfig fields (:func:`naslung.options.parse_field_values`)."""
    return parse_field_values(sets, TrainConfig, "TrainConfig")


def slug(config: Any) -> str:
    """Default folder name of a configuration: ``4-4-4-4-8_asoftmax_cbam_s0``."""
    arch = re.sub(r"[^0-9]+", "-", config.arch).strip("-")
    return f"{arch}_{config.loss}_{config.attention}_s{config.seed}"


def load_init(name: str | None, options: TrainOptions) -> tuple[Any, TrainOptions]:
    """``--init NAME`` as a :class:`naslung.train.init.WeightInit` (None without ``--init``), and ``options``
    with ``--arch`` defaulting to the model's architecture when neither ``--arch``, ``--set arch=`` nor
    ``--config`` gives one. A model that is unknown, not built or damaged is a ``typer.BadParameter``."""
    if name is None:
        return None, options
    from dataclasses import replace

    from naslung.zoo.init import init_from_bundle

    try:
        init = init_from_bundle(name)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--init") from exc
    in_sets = any(str(s).split("=", 1)[0].strip() == "arch" for s in options.sets or [])
    in_file = options.config_file is not None and "arch" in _read_config_file(options.config_file)
    arch = init.model_options.get("arch")
    if options.arch is None and not in_sets and not in_file and arch:
        options = replace(options, arch=str(arch))
    return init, options


def check_init_for(init: Any, config: TrainConfig, dataset: Any, data: Path, folds: list[int | None]) -> None:
    """:func:`naslung.train.init.check_init` as a one-line error (exit 2)."""
    from naslung.cli.common import fail
    from naslung.train.init import check_init

    try:
        check_init(init, config, dataset, folds, data)
    except ValueError as exc:
        fail(exc)


def load_data(data: Path) -> Any:
    """The dataset in memory, remembering its file's content fingerprint (recorded in every run)."""
    from naslung.fingerprint import load_dataset

    try:
        return load_dataset(data)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc


def dump_json(data: Any) -> None:
    """Print ``data`` as indented JSON (``--json``)."""
    typer.echo(json.dumps(data, indent=2, default=str))
