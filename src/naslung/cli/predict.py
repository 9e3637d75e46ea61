"""`naslung predict`: malignancy at world coordinates of a CT file, by a run, a cv folder or an ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from naslung.cli.common import fail
from naslung.options import check_option
from naslung.outputs import PNG, check_file_output


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the top-level app."""
    app.command("predict")(predict)


def predict(
    model: Path = typer.Option(..., "--model", help="run, cv folder or ensemble (runs folder/JSON)"),
    image: Path = typer.Option(..., "--image", help="CT: .mhd/.mha, .nii/.nii.gz, .nrrd or a DICOM folder"),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID of the series to read when "
                                                             "the --image DICOM folder holds several"),
    coords: str | None = typer.Option(None, "--coords", help="world X,Y,Z in mm (LUNA16 convention)"),
    coords_file: Path | None = typer.Option(None, "--coords-file", help="CSV with coordX,coordY,coordZ"),
    spacing: float | None = typer.Option(None, "--spacing", help="crop mm, if the run lacks it"),
    window: str | None = typer.Option(None, "--window", help="HU lo,hi, if the run lacks it"),
    overlay: Path | None = typer.Option(None, "--overlay", help="attention overlay PNG"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing overlay PNG"),
    runtime: str = typer.Option("torch", "--runtime",
                                help="torch, or onnx: ONNX Runtime on an export cached per checkpoint"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Each member's probability, the majority vote (paper section 3.5), soft vote and agreement."""
    from naslung.data.prepare import parse_window
    from naslung.explain.predict import (
        RUNTIMES,
        load_members,
        overlay_paths,
        parse_coords,
        predict_nodules,
        read_coords_file,
        resolve_settings,
        save_overlays,
    )

    if (coords is None) == (coords_file is None):
        raise typer.BadParameter("give exactly one of --coords X,Y,Z and --coords-file CSV",
                                 param_hint="--coords")
    try:
        check_option("runtime", runtime, RUNTIMES)
        points = [("0", parse_coords(coords))] if coords is not None else read_coords_file(coords_file)
        if overlay is not None:
            inputs = [("--model", model), ("--image", image), ("--coords-file", coords_file)]
            for target in overlay_paths(overlay, [pid for pid, _ in points]):
                check_file_output(target, PNG, "--overlay", overwrite=overwrite, inputs=inputs)
        members = load_members(model)
        settings, notes = resolve_settings(members, spacing, parse_window(window) if window else None)
        if series is not None and not image.is_dir():
            raise ValueError(f"--series {series}: --image {image} is a file, not a DICOM folder")
        results = predict_nodules(image, points, members, settings, runtime=runtime,
                                  attention=overlay is not None, series_id=series)
        if overlay is not None:
            save_overlays(results, overlay)
    except (FileNotFoundError, ValueError) as exc:
        if "pick one with series_id" in str(exc):  # the library's name for --series
            fail(str(exc).replace("pick one with series_id", "pick one with --series UID"))
        fail(exc)
    except ImportError as exc:  # the onnx extra is missing: the message says how to install it
        fail(str(exc))
    if as_json:
        crop = {"size": settings.size, "dims": settings.dims, "spacing": settings.spacing,
                "window": settings.window}
        typer.echo(json.dumps({"image": str(image), "model": str(model), "notes": notes, "crop": crop,
                               "nodules": [r.to_dict() for r in results]}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    for r in results:
        table = Table(title=f"nodule {r.id} at {[round(v, 1) for v in r.world]} mm: "
                            f"{'MALIGNANT' if r.majority else 'benign'} (majority of {len(r.members)}), "
                            f"mean p {r.mean_prob:.3f}, agreement {r.agreement:.2f}"
                            + (" [crop reaches past the scan]" if r.padded else ""))
        for col in ("member", "spec", "p(malignant)", "vote"):
            table.add_column(col, justify="left" if col in ("member", "spec") else "right")
        for m in r.members:
            table.add_row(escape(m["run"]), escape(m["spec"]), f"{m['prob_malignant']:.3f}",
                          "malignant" if m["vote"] else "benign")
        console.print(table)
        if r.overlay:
            typer.echo(f"overlay: {r.overlay}")
