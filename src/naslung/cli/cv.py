"""`naslung cv`: cross-validation over test folds, for one configuration or every member of a search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import check_threads, fail, pct
from naslung.cli.progress import progress_bar
from naslung.cli.train_options import (
    BUDGET_HELP,
    CV_OUT_HELP,
    HELP,
    MEMBERS_HELP,
    RECIPE_HELP,
    SET_HELP,
    check_for_data,
    dump_json,
    load_data,
    resolve_config,
    slug,
)
from naslung.options import SEED_MAX
from naslung.outputs import CV_FOLDER, MEMBERS_CV, check_folder_output


def register(app: typer.Typer) -> None:
    """Add the ``cv`` command to the top-level app."""
    app.command("cv")(cv)


def cv(
    data: Path = typer.Option(..., "--data", help="crop dataset file"),
    arch: str | None = typer.Option(None, "--arch", help=HELP["arch"]),
    members_file: Path | None = typer.Option(None, "--members", help=MEMBERS_HELP),
    folds: str = typer.Option("1-5", "--folds", help="test folds, e.g. 1-5 or 0,3"),
    budget: str | None = typer.Option(None, "--budget", help=BUDGET_HELP),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    epochs: int | None = typer.Option(None, "--epochs", help=HELP["epochs"]),
    batch: int | None = typer.Option(None, "--batch", help=HELP["batch"]),
    loss: str | None = typer.Option(None, "--loss", help=HELP["loss"]),
    attention: str | None = typer.Option(None, "--attention", help=HELP["attention"]),
    seed: int | None = typer.Option(None, "--seed", min=0, max=SEED_MAX, help=HELP["seed"]),
    split_seed: int | None = typer.Option(None, "--split-seed", min=0, max=SEED_MAX, help=HELP["split_seed"]),
    device: str | None = typer.Option(None, "--device", help=HELP["device"]),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help=HELP["val_fraction"]),
    select: str | None = typer.Option(None, "--select", help=HELP["select"]),
    lr: float | None = typer.Option(None, "--lr", help=HELP["lr"]),
    threads: int | None = typer.Option(None, "--threads"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="runs trained at once, single-threaded, in spawned "
                             "processes (the same numbers as --jobs 1 --threads 1)"),
    max_shift: int | None = typer.Option(None, "--max-shift", help=HELP["max_shift"]),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="3-D only"),
    config_file: Path | None = typer.Option(None, "--config", help=HELP["config"]),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help=CV_OUT_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cross-validate over test folds (resumable: finished folds are skipped), with baselines beside it."""
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.cv import run_cv
    from naslung.train.splits import parse_folds

    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    if members_file is not None:
        others = [arch, batch, loss, attention, seed, split_seed, val_fraction, select, lr, max_shift,
                  channels_last, config_file, sets, recipe]
        _cv_members(data, members_file, fold_list, out, as_json, budget=budget, epochs=epochs,
                    threads=threads, device=device, jobs=jobs, others=others)
        return
    config = resolve_config(config_file=config_file, budget=budget, recipe=recipe, sets=sets,
                            max_shift=max_shift, threads=threads, data=data,
                            arch=arch, epochs=epochs, batch_size=batch, loss=loss, attention=attention,
                            seed=seed, split_seed=split_seed, device=device, val_fraction=val_fraction,
                            select_metric=select, lr=lr, channels_last=channels_last)
    out = out or Path("runs") / f"cv_{slug(config)}"
    check_folder_output(out, CV_FOLDER, "--out", inputs=[("--data", data), ("--config", config_file)])
    dataset = load_data(data)
    check_for_data(config, dataset, data, max_shift=max_shift, channels_last=channels_last, sets=sets)
    try:
        result = run_cv(dataset, config, fold_list, out, progress=progress_bar(as_json), source=str(data),
                        jobs=jobs)
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json(result.to_dict())
        return
    print_cv_table(result.summary, f"{config.arch}  {config.loss}  {config.attention}  folds {folds}")
    typer.echo(f"cv folder: {out}  ({result.seconds:.0f} s of training)")


def _cv_members(data: Path, members_file: Path, folds: list[int], out: Path | None, as_json: bool, *,
                budget: str | None, epochs: int | None, threads: int | None, device: str | None,
                jobs: int, others: list[Any]) -> None:
    """``cv --members``: each member's own TrainConfig; only the budget, threads and device may change."""
    from naslung.search.members import read_members, run_members_cv
    from naslung.train.checkpoint import CheckpointError

    if any(v not in (None, []) for v in others):
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
