"""`naslung reproduce`: search, members, test folds 1-5, ensemble, ablations, explanations, one report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from naslung.cli.common import pct
from naslung.options import SEED_MAX
from naslung.outputs import REPRODUCE, check_folder_output
from naslung.pipeline.budgets import BUDGETS

BUDGET_HELP = (f"how much work: {', '.join(BUDGETS)} (paper: section 4.1.3, 10 epochs per candidate, "
               "9 members x 700 epochs)")
SET_HELP = "change one budget field as FIELD=VALUE (JSON; repeatable), e.g. --set search_trials=2"


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` command to the top-level app."""
    app.command("reproduce")(reproduce)


def reproduce(
    data: Path = typer.Option(..., "--data", help="crop dataset file (naslung data prepare)"),
    out: Path = typer.Option(..., "--out", help="output folder (search, members, ablate, explain, report)"),
    budget: str = typer.Option("small", "--budget", help=BUDGET_HELP),
    executor: str = typer.Option("local", "--executor", help="search trials: local (in turn) or ray"),
    folds: str = typer.Option("1-5", "--folds", help="test folds reported (the search never sees them)"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="search, split and bootstrap seed"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads for training"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="ablation cv folders trained at once"),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """The paper's sequence at a budget; every stage resumable (rerun the same command to continue)."""
    from naslung.cli.progress import RichProgress, progress_bar
    from naslung.data.source import phantom_note
    from naslung.pipeline.budgets import budget_for, parse_overrides
    from naslung.pipeline.reproduce import ReproduceConfig, run_reproduce
    from naslung.train.splits import parse_folds

    try:
        chosen = budget_for(budget, parse_overrides(sets))
        config = ReproduceConfig(data=str(data), out=str(out), budget=chosen, folds=parse_folds(folds),
                                 executor=executor, seed=seed, device=device, threads=threads, jobs=jobs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_folder_output(out, REPRODUCE, "--out", inputs=[("--data", data)])

    def log(message: str) -> None:
        typer.echo(message, err=as_json)

    with progress_bar(as_json) or RichProgress(quiet=True) as progress:
        summary = run_reproduce(config, log=log, progress=progress)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    print_results(summary["results"], phantom_note(summary["phantom"]))
    typer.echo(f"results: {out / 'results.md'}; status: {summary['status']}")
    typer.echo(f"report: {summary['report']}")


def print_results(results: dict, note: str = "") -> None:
    """Table 5 style: members, the ensemble and the diameter baseline, mean ± std over test folds."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    folds = ",".join(map(str, results["folds"]))
    table = Table(title=f"test folds {folds}: mean ± sample std (%)" + (f"; {note}" if note else ""))
    table.add_column("method", no_wrap=True)
    for col in ("acc %", "sens %", "spec %", "F1 %", "AUC %"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in results["summary"]:
        cells = [f"{pct(s.get(f'{k}_mean'))} ± {pct(s.get(f'{k}_std'))}"
                 for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")]
        table.add_row(escape(s["method"]), *cells)
    for s in results["summary"]:
        if s.get("arch"):
            console.print(f"{escape(s['method'])}: {escape(s['arch'])} ({s.get('member')})")
    console.print(table)
