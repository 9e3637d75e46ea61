"""`naslung demo`: the main job on the embedded LIDC phantom (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from naslung.cli.common import from_alias, pct
from naslung.options import SEED_MAX
from naslung.outputs import DEMO, check_folder_output
from naslung.pipeline.budgets import BUDGETS

BUDGET_HELP = (f"how much work: {', '.join(BUDGETS)} (small: the 20-30 minute CPU demo; "
               "paper: section 4.1.3)")


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the top-level app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (search, members, ensemble summary)."),
    budget: str = typer.Option("small", "--budget", help=BUDGET_HELP),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Phantom and training seed."),
    limit: Optional[int] = typer.Option(None, help="Phantom nodules to render (default: all ~1,010)."),  # noqa: UP045
    search_trials: Optional[int] = typer.Option(None, help="POP trials (default: the budget's)."),  # noqa: UP045
    search_epochs: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Epochs per search candidate (default: the budget's)."),
    max_latency_ms: Optional[float] = typer.Option(  # noqa: UP045
        None, "--max-latency-ms", help="Only sample candidates predicted faster than this (ms, batch 1)."),
    members: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Ensemble members selected from the search (default: the budget's)."),
    epochs: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Training epochs per member (default: the budget's)."),
    min_auc: Optional[float] = typer.Option(  # noqa: UP045
        None, help="search select's floor on a member's inner-validation AUC (default: the budget's)."),
    min_balanced_accuracy: Optional[float] = typer.Option(  # noqa: UP045
        None, help="the floor on its balanced accuracy (default: the budget's)."),
    test_fold: int = typer.Option(
        1, help="LUNA16 fold held out for the final test: one the search never sees (1-5)."),
    workers: Optional[int] = typer.Option(None, help="Phantom rendering processes."),  # noqa: UP045
    latency_budget_ms: Optional[float] = typer.Option(  # noqa: UP045
        None, "--latency-budget-ms", hidden=True),  # the former name of --max-latency-ms
) -> None:
    """Phantom -> crops -> POP search -> train members -> majority-vote ensemble, printed beside the
    diameter baseline. Resumable: rerun to continue after a kill. Results are PHANTOM results."""
    from rich.console import Console
    from rich.table import Table

    from naslung.cli.progress import RichProgress, progress_bar
    from naslung.data.source import PHANTOM_NOTE
    from naslung.pipeline.budgets import budget_for
    from naslung.pipeline.demo import DemoConfig, run_demo

    console = Console()
    given = {"search_trials": search_trials, "search_epochs": search_epochs, "members": members,
             "epochs": epochs, "min_auc": min_auc, "min_balanced_accuracy": min_balanced_accuracy}
    max_latency_ms = from_alias(max_latency_ms, latency_budget_ms, "--max-latency-ms", "--latency-budget-ms")
    try:
        chosen = budget_for(budget, {k: v for k, v in given.items() if v is not None})
        cfg = DemoConfig(out=str(out), seed=seed, limit=limit, budget=chosen,
                         latency_budget_ms=max_latency_ms, test_fold=test_fold, workers=workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_folder_output(out, DEMO, "--out")
    with progress_bar(False) or RichProgress() as progress:
        summary = run_demo(cfg, log=lambda msg: console.print(f"[bold cyan]{msg}"), progress=progress)
    table = Table(title=f"Test fold {test_fold}: {PHANTOM_NOTE}")
    table.add_column("method (test fold)", no_wrap=True)
    for col in ("acc %", "sens %", "spec %", "F1 %", "AUC %"):
        table.add_column(col, justify="right")
    for row in summary["rows"]:
        table.add_row(row["method"], *(pct(row.get(k)) for k in ("accuracy", "sensitivity", "specificity",
                                                                   "f1", "auc")))
    for row in summary["rows"]:
        if "arch" in row:
            console.print(f"{row['method']}: {row['arch']} ({row['params']:,} parameters)")
    console.print(table)
    minutes = summary["timings_s"]["total_s"] / 60
    console.print(f"mean member agreement {summary['mean_agreement']:.3f}; total {minutes:.1f} min; "
                  f"summary: {out / 'demo_summary.json'}")
    montage = summary["explain"]["files"].get("montage")
    if montage:
        console.print(f"attention montage (Fig. 5): {montage}")
    console.print(f"report: {summary['report']}")
