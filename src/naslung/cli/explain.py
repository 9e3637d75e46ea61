"""`naslung explain`: attention montage (Fig. 5), t-SNE (Fig. 6) and DBI (Table 4) of trained runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from naslung.cli.common import check_threads, fail
from naslung.options import SEED_MAX
from naslung.outputs import EXPLAIN, check_folder_output


def register(app: typer.Typer) -> None:
    """Add ``explain`` to the top-level app."""
    app.command("explain")(explain)


def explain(
    run: Path | None = typer.Argument(None, help="run folder (naslung train --out) or cv folder",
                                      show_default=False),
    model: str | None = typer.Option(None, "--model", help="bundled model NAME (naslung models list) in "
                                                           "place of RUN: every member of it"),
    data: Path = typer.Option(..., "--data", help="crop dataset file the run was trained on"),
    fold: int = typer.Option(..., "--fold", help="fold whose nodules are explained (the run's test fold)"),
    out: Path = typer.Option(..., "--out", help="output folder for PNGs, dbi.csv and explain.json"),
    compare: list[Path] | None = typer.Option(None, "--compare", help="another run, e.g. the Softmax twin"),
    per_group: int = typer.Option(4, "--per-group", min=1, help="montage examples per group"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="t-SNE seed"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    allow_seen_fold: bool = typer.Option(
        False, "--allow-seen-fold", help="explain a fold the run trained or validated on (refused by "
                                         "default; explain.json notes it)"),
    as_json: bool = typer.Option(False, "--json", help="print explain.json"),
) -> None:
    """Explain runs on one fold: stage-2 attention montage, t-SNE of features, Davies-Bouldin index.

    Each run must have been trained on --data (its recorded dataset fingerprint) and have --fold as its
    test fold; another dataset is refused, and so is a fold the run saw unless --allow-seen-fold. A bundled
    model (--model NAME) saw every fold its card lists: with the deployment models, every fold.
    """
    import torch

    from naslung.explain.pipeline import run_explain

    if (run is None) == (model is None):
        raise typer.BadParameter("give a RUN folder or --model NAME (one of them)", param_hint="RUN")
    check_threads(threads)
    check_folder_output(out, EXPLAIN, "--out",
                        inputs=[("RUN", run), ("--data", data), *(("--compare", c) for c in compare or [])])
    if model is not None:
        from naslung.zoo.registry import RECIPES, is_model_name

        if not is_model_name(model):
            fail(f"--model {model}: not a bundled model name (known: {', '.join(RECIPES)}); give a run "
                 f"folder as RUN")
    if threads:
        torch.set_num_threads(threads)
    try:
        summary = run_explain(model if model is not None else run, data, fold, out, compare or [], per_group,
                              seed, allow_seen_fold)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    table = Table(title=f"Table 4 analogue: Davies-Bouldin index of penultimate features, fold {fold}")
    for col in ("run", "loss", "features", "S0", "S1", "M01", "DBI"):
        table.add_column(col, justify="left" if col in ("run", "loss", "features") else "right")
    for r in summary["dbi"]:
        cells = [f"{r[k]:.3f}" if k in r else "-" for k in ("S0", "S1", "M01", "DBI")]
        table.add_row(escape(r["run"]), str(r["loss"]), r["features"], *cells)
    console.print(table)
    for name, path in summary["files"].items():
        typer.echo(f"{name}: {path}")
