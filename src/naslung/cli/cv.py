"""`naslung cv`: cross-validation over test folds, for one configuration or every member of a search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import check_threads, fail, from_alias, pct
from naslung.cli.progress import progress_bar
from naslung.cli.train_options import (
    ARCH,
    ATTENTION,
    BATCH,
    BATCH_ALIAS,
    BUDGET,
    CHANNELS_LAST,
    CONFIG_FILE,
    CV_OUT_HELP,
    DEVICE,
    EPOCHS,
    INIT,
    LOSS,
    LR,
    MAX_SHIFT,
    MEMBERS_HELP,
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
from naslung.outputs import CV_FOLDER, MEMBERS_CV, check_folder_output


def register(app: typer.Typer) -> None:
    """Add the ``cv`` command to the top-level app."""
    app.command("cv")(cv)


def cv(
    data: Path = typer.Option(..., "--data", help="crop dataset file"),
    arch: str | None = ARCH,
    members_file: Path | None = typer.Option(None, "--members", help=MEMBERS_HELP),
    folds: str = typer.Option("1-5", "--folds", help="test folds, e.g. 1-5 or 0,3"),
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
    threads: int | None = typer.Option(None, "--threads"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="runs trained at once, single-threaded, in spawned "
                             "processes (the same numbers as --jobs 1 --threads 1)"),
    max_shift: int | None = MAX_SHIFT,
    channels_last: bool | None = CHANNELS_LAST,
    config_file: Path | None = CONFIG_FILE,
    sets: list[str] | None = SETS,
    init_name: str | None = INIT,
    out: Path | None = typer.Option(None, "--out", help=CV_OUT_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cross-validate over test folds (resumable: finished folds are skipped), with baselines beside it.

    Every fold starts from a random init unless --init names a bundled model; a test fold that model was
    trained on is refused (the bundled deployment models were trained on every fold).
    """
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.cv import run_cv
    from naslung.train.splits import parse_folds

    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    options = TrainOptions(arch=arch, budget=budget, recipe=recipe, epochs=epochs, loss=loss,
                           attention=attention, seed=seed, split_seed=split_seed, device=device,
                           val_fraction=val_fraction, select=select, lr=lr, threads=threads,
                           max_shift=max_shift, channels_last=channels_last, config_file=config_file,
                           sets=sets, batch=from_alias(batch, batch_alias, "--batch-size", "--batch"))
    if members_file is not None:
        if init_name is not None:
            raise typer.BadParameter("each member starts from a random init; --init applies to a single "
                                     "configuration", param_hint="--init")
        _cv_members(data, members_file, fold_list, out, as_json, options, jobs=jobs)
        return
    init, options = load_init(init_name, options)
    config = options.resolve(data)
    out = out or Path("runs") / f"cv_{slug(config)}"
    check_folder_output(out, CV_FOLDER, "--out", inputs=[("--data", data), ("--config", config_file)])
    dataset = load_data(data)
    options.check_for_data(config, dataset, data)
    check_init_for(init, config, dataset, data, list(fold_list))
    try:
        result = run_cv(dataset, config, fold_list, out, progress=progress_bar(as_json), source=str(data),
                        jobs=jobs, init=init)
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json(result.to_dict())
        return
    print_cv_table(result.summary, f"{config.arch}  {config.loss}  {config.attention}  folds {folds}")
    typer.echo(f"cv folder: {out}  ({result.seconds:.0f} s of training)")


def _cv_members(data: Path, members_file: Path, folds: list[int], out: Path | None, as_json: bool,
                options: TrainOptions, *, jobs: int) -> None:
    """``cv --members``: each member's own TrainConfig; only the budget, threads and device may change."""
    from naslung.search.members import read_members, run_members_cv
    from naslung.train.checkpoint import CheckpointError

    budget, epochs, threads, device = options.budget, options.epochs, options.threads, options.device
    if options.given_besides("budget", "epochs", "threads", "device"):
        raise typer.BadParameter("with --members each member trains with the search's settings; only "
                                 "--budget, --epochs, --threads and --device may be given",
                                 param_hint="--members")
    check_threads(threads)
    try:
        members = read_members(members_file)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--members") from exc
    out = out or members.path.parent / "members_cv"
    check_folder_output(out, MEMBERS_CV, "--out", inputs=[("--data", data), ("--members", members_file)])
    dataset = load_data(data)
    try:
        results = run_members_cv(dataset, members, folds, out, budget=budget, epochs=epochs, threads=threads,
                                 device=device, progress=progress_bar(as_json), source=str(data), jobs=jobs)
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json({name: r.to_dict() for name, r in results.items()})
        return
    for name, result in results.items():
        print_cv_table(result.summary, f"{name}  folds {folds}")
    typer.echo(f"member cv folders: {out}/<member>  "
               f"(ensemble them: naslung ensemble --members {members.path})")


def print_cv_table(summary: list[dict[str, Any]], title: str) -> None:
    """Rich table: mean +- std (percent) per method."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "accuracy", "sensitivity", "specificity", "F1", "AUC", "params"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for s in summary:
        cells = [f"{pct(s[f'{k}_mean'])} ± {pct(s[f'{k}_std'])}"
                 for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")]
        table.add_row(s["method"], *cells, f"{s['params']:,}" if s.get("params") else "-")
    Console().print(table)
