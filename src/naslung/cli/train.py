"""`naslung train`: one model, one test fold, the epoch chosen on an inner validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import fail, from_alias, pct
from naslung.cli.progress import progress_bar
from naslung.cli.train_options import (
    ARCH,
    ATTENTION,
    BATCH,
    BATCH_ALIAS,
    BUDGET,
    CHANNELS_LAST,
    CONFIG_FILE,
    DEVICE,
    EPOCHS,
    INIT,
    LOSS,
    LR,
    MAX_SHIFT,
    RECIPE,
    SEED,
    SELECT,
    SETS,
    SPLIT_SEED,
    VAL_FRACTION,
    TrainOptions,
    check_init_for,
    dump_json,
    load_data,
    load_init,
    slug,
)
from naslung.outputs import TRAIN_RUN, check_folder_output
from naslung.train.rundir import CVDir, RunDir


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to the top-level app."""
    app.command("train")(train)


def train(
    data: Path = typer.Option(..., "--data", help="crop dataset file (naslung data prepare)"),
    arch: str | None = ARCH,
    fold: int | None = typer.Option(None, "--fold", help="test fold (LUNA16 subset); omit for no test fold"),
    budget: str | None = BUDGET,
    recipe: str | None = RECIPE,
    epochs: int | None = EPOCHS,
    batch: int | None = BATCH,
    batch_alias: int | None = BATCH_ALIAS,
    loss: str | None = LOSS,
    attention: str | None = ATTENTION,
    seed: int | None = SEED,
    split_seed: int | None = SPLIT_SEED,
    device: str | None = DEVICE,
    val_fraction: float | None = VAL_FRACTION,
    select: str | None = SELECT,
    lr: float | None = LR,
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    max_shift: int | None = MAX_SHIFT,
    channels_last: bool | None = CHANNELS_LAST,
    config_file: Path | None = CONFIG_FILE,
    sets: list[str] | None = SETS,
    init_name: str | None = INIT,
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/<arch>_<loss>_.../fold_K)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run in --out"),
    as_json: bool = typer.Option(False, "--json", help="print result.json instead of a table"),
) -> None:
    """Train one model with the test fold held out; the epoch is chosen on an inner validation split.

    The weights start from a random init unless --init names a bundled model; config.json records which.
    """
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.engine import fit

    options = TrainOptions(arch=arch, budget=budget, recipe=recipe, epochs=epochs, loss=loss,
                           attention=attention, seed=seed, split_seed=split_seed, device=device,
                           val_fraction=val_fraction, select=select, lr=lr, threads=threads,
                           max_shift=max_shift, channels_last=channels_last, config_file=config_file,
                           sets=sets, batch=from_alias(batch, batch_alias, "--batch-size", "--batch"))
    init, options = load_init(init_name, options)
    config = options.resolve(data)
    if out is None:
        base = Path("runs") / slug(config)
        out = CVDir(base).run(fold).path if fold is not None else base / "dev"
    check_folder_output(out, TRAIN_RUN, "--out", inputs=[("--data", data), ("--config", config_file)])
    if resume and RunDir(out).state() == "new":
        fail(f"--resume: nothing to resume in {out} (no last.pt or result.json); run without --resume to "
             f"start a new run")
    dataset = load_data(data)
    check_classes(dataset, config, fold, data)
    options.check_for_data(config, dataset, data)
    check_init_for(init, config, dataset, data, [fold])
    try:
        result = fit(dataset, config, test_fold=fold, out_dir=out, resume=resume,
                     progress=progress_bar(as_json), source=str(data), init=init)
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json(result.to_dict())
        return
    print_metrics(f"{config.arch}  fold {fold}  epoch {result.epoch}  ({result.params:,} parameters)",
                  {"val (chosen epoch)": result.val_metrics, "test": result.test_metrics})
    typer.echo(f"run folder: {out}")


def check_classes(dataset: Any, config: Any, fold: int | None, data: Path) -> None:
    """Refuse a dataset, training split or validation split that holds a single class (a DataError naming
    ``data``); a split that cannot be made at all is left to ``fit``'s own message."""
    from naslung.data.validate import check_trainable
    from naslung.train.engine import data_split

    check_trainable(dataset.labels, data)
    try:
        split = data_split(dataset, config, fold)
    except ValueError:
        return
    where = f" (test fold {fold})" if fold is not None else ""
    for name, rows in (("the training split", split.train), ("the validation split", split.val)):
        check_trainable(dataset.labels[rows], data, f"{name}{where}")


def print_metrics(title: str, rows: dict[str, dict[str, Any] | None]) -> None:
    """Rich table of metrics (percent) per split; a None split is left out."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("split", "accuracy", "sensitivity", "specificity", "F1", "AUC", "n"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, m in rows.items():
        if m is None:
            continue
        table.add_row(name, *(pct(m[k]) for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")),
                      str(m["n"]))
    Console().print(table)
