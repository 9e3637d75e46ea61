"""`naslung report`: one self-contained HTML page of an experiment folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from naslung.cli.common import fail
from naslung.options import SEED_MAX


def register(app: typer.Typer) -> None:
    """Add ``report`` to the top-level app."""
    app.command("report")(report)


def report(
    experiment: Path = typer.Argument(..., help="folder with runs, cv folders, search and explain outputs"),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing naslung report"),
    data: Path | None = typer.Option(None, "--data", help="dataset file, if the runs' one has moved"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=100, help="bootstrap replicates"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="bootstrap seed"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
) -> None:
    """Tables with 95 % CIs beside the diameter baseline, calibration, figures, protocol and provenance."""
    from naslung.outputs import REPORT, check_file_output
    from naslung.report.build import build_report

    check_file_output(out, REPORT, "--out", overwrite=overwrite,
                      inputs=[("EXPERIMENT", experiment), ("--data", data)])
    try:
        summary = build_report(experiment, out, data, bootstrap, seed)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"report: {out} ({summary['runs']} runs, {len(summary['figures'])} figures"
               f"{', PHANTOM data' if summary['phantom'] else ''})")
