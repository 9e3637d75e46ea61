"""`naslung demo`: the main job on the embedded LIDC phantom (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from naslung.cli.common import pct


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the top-level app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (search, members, ensemble summary)."),
    seed: int = typer.Option(0, help="Phantom and training seed."),
    limit: Optional[int] = typer.Option(None, help="Phantom nodules to render (default: all ~1,010)."),  # noqa: UP045
    search_trials: int = typer.Option(6, help="POP trials."),
    search_epochs: int = typer.Option(4, help="Epochs per search candidate."),
    latency_budget_ms: Optional[float] = typer.Option(  # noqa: UP045
        None, help="Only sample candidates predicted faster than this (ms, batch 1)."),
    members: int = typer.Option(3, help="Ensemble members selected from the search."),
    epochs: int = typer.Option(8, help="Training epochs per member."),
    test_fold: int = typer.Option(
        1, help="LUNA16 fold held out for the final test: one the search never sees (1-5)."),
    workers: Optional[int] = typer.Option(None, help="Phantom rendering processes."),  # noqa: UP045
) -> None:
    """Phantom -> crops -> POP search -> train members -> majority-vote ensemble, printed beside the
    diameter baseline. Resumable: rerun to continue after a kill. Results are PHANTOM results."""
    from rich.console import Console
    from rich.table import Table

    from naslung.pipeline.demo import PHANTOM_NOTE, DemoConfig, run_demo

    console = Console()
    cfg = DemoConfig(out=str(out), seed=seed, limit=limit, search_trials=search_trials,
                     search_epochs=search_epochs, latency_budget_ms=latency_budget_ms, members=members,
                     epochs=epochs, test_fold=test_fold, workers=workers)
    summary = run_demo(cfg, log=lambda msg: console.print(f"[bold cyan]{msg}"))
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
