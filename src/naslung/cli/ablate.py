"""`naslung ablate`: the paper's Tables 2-3 (CBAM, A-Softmax, CBAM order) over architectures and folds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import check_threads, fail
from naslung.cli.train_options import BUDGET_HELP
from naslung.outputs import ABLATION, check_folder_output

ARCHS_HELP = ("architectures, paper notation; repeat the option or list them after it: "
              "--archs '[4,4,[4],[4],[8]]' '[4,4,[4,4],[4,8],[8,8]]'")


def register(app: typer.Typer) -> None:
    """Add ``ablate`` to the top-level app."""
    app.command("ablate")(ablate)


def ablate(
    data: Path = typer.Option(..., "--data", help="crop dataset file (naslung data prepare)"),
    archs: list[str] | None = typer.Option(None, "--archs", help=ARCHS_HELP),
    more_archs: list[str] | None = typer.Argument(None, metavar="SPEC", show_default=False,
                                                   help="more architectures (after --archs)"),
    folds: str = typer.Option("1-5", "--folds", help="test folds, e.g. 1-5 or 0,3"),
    out: Path = typer.Option(..., "--out", help="ablation folder: <variant>/<arch>/ cv folders, ablation.*"),
    epochs: int | None = typer.Option(None, "--epochs", help="planned epochs (default: TrainConfig's)"),
    budget: str | None = typer.Option(None, "--budget", help=BUDGET_HELP),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads per job"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="cv folders trained at once (spawned, 1 thread each)"),
    as_json: bool = typer.Option(False, "--json", help="print ablation.json"),
) -> None:
    """Train base / +CBAM / +A-Softmax / both and spatial-first CBAM per architecture (resumable)."""
    from naslung.cli.progress import progress_bar
    from naslung.train.ablation import run_ablation
    from naslung.train.splits import parse_folds

    check_threads(threads)
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    check_folder_output(out, ABLATION, "--out", inputs=[("--data", data)])

    def log(message: str) -> None:
        typer.echo(message, err=True)

    try:
        result = run_ablation(data, [*(archs or []), *(more_archs or [])], fold_list, out, epochs=epochs,
                              threads=threads, jobs=jobs, log=log, budget=budget,
                              progress=progress_bar(as_json or jobs > 1))
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    print_tables(result)
    typer.echo(f"ablation: {out / 'ablation.json'}, {out / 'ablation.md'}  ({result['seconds']:.0f} s)")


def print_tables(result: dict[str, Any]) -> None:
    """Tables 2 and 3 as rich tables, under the phantom note when the data is the phantom."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from naslung.train.ablation import TABLE_HEADERS, TABLE_TITLES, table_rows

    console = Console()
    if result.get("note"):
        console.print(f"[bold yellow]{escape(result['note'])}[/]")
    for key, title in TABLE_TITLES.items():
        rows = table_rows(result, key)
        if not rows:
            continue
        table = Table(title=f"{title}: {len(result['archs'])} architecture(s) x test folds "
                            f"{','.join(map(str, result['folds']))}; mean±sample std (%)")
        for k, col in enumerate(TABLE_HEADERS):
            table.add_column(col, justify="left" if k == 0 else "right")
        for row in rows:
            table.add_row(*(escape(c.replace(" ± ", "±")) for c in row))
        console.print(table)
