"""`naslung predict`: malignancy at world coordinates of a CT file, by a run, a cv folder or an ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from naslung.cli.common import fail, from_alias
from naslung.options import check_option
from naslung.outputs import PNG, check_file_output


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the top-level app."""
    app.command("predict")(predict)


def predict(
    model: Path = typer.Option(..., "--model", help="bundled model NAME (naslung models list), run, cv "
                                                    "folder or ensemble (runs folder/JSON)"),
    image: Path | None = typer.Option(None, "--image", help="CT: .mhd/.mha, .nii/.nii.gz, .nrrd or a DICOM "
                                                            "folder"),
    scans: Path | None = typer.Option(None, "--scans", help="a whole study: a LUNA16 tree, or a folder of "
                                                            ".mhd/.nii/.nrrd files and DICOM series named by "
                                                            "series uid (with --candidates and --out)"),
    candidates: Path | None = typer.Option(None, "--candidates", help="with --scans: CSV with seriesuid, "
                                                                      "coordX, coordY, coordZ"),
    out: Path | None = typer.Option(None, "--out", help="with --scans: the predictions CSV to write "
                                                        "(rerun after a kill: resumes)"),
    batch: int = typer.Option(64, "--batch-size", min=1, help="with --scans: crops per forward pass"),
    batch_alias: int | None = typer.Option(None, "--batch", min=1, hidden=True),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID of the series to read when "
                                                             "the --image DICOM folder holds several"),
    coords: str | None = typer.Option(None, "--coords", help="world X,Y,Z in mm (LUNA16 convention)"),
    coords_file: Path | None = typer.Option(None, "--coords-file", help="CSV with coordX,coordY,coordZ"),
    spacing: float | None = typer.Option(None, "--spacing", help="crop mm, if the run lacks it"),
    window: str | None = typer.Option(None, "--window", help="HU lo,hi, if the run lacks it"),
    overlay: Path | None = typer.Option(None, "--overlay", help="attention overlay PNG"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing overlay PNG or --out CSV"),
    runtime: str = typer.Option("torch", "--runtime",
                                help="torch; onnx: ONNX Runtime, or openvino: OpenVINO, on an export "
                                "cached per checkpoint; auto: the faster of torch and openvino, timed "
                                "per member"),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads of torch and ONNX Runtime (on a "
                                                              "machine shared with other jobs, 1 is often "
                                                              "fastest: docs/performance.md)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Each member's probability, the majority vote (paper section 3.5), soft vote and agreement."""
    from naslung.cli.common import check_threads
    from naslung.data.prepare import parse_window
    from naslung.serving.predict import (
        RUNTIMES,
        load_members,
        overlay_paths,
        parse_coords,
        predict_nodules,
        read_coords_file,
        resolve_settings,
        save_overlays,
    )

    batch = from_alias(batch, batch_alias, "--batch-size", "--batch", default=64)
    check_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    if scans is not None:
        _predict_study(model, scans, candidates, out, runtime=runtime, batch=batch, overwrite=overwrite,
                       spacing=spacing, window=window, as_json=as_json,
                       others={"--image": image, "--coords": coords, "--coords-file": coords_file,
                               "--overlay": overlay, "--series": series})
        return
    if image is None:
        raise typer.BadParameter("give --image CT (with --coords or --coords-file), or --scans DIR with "
                                 "--candidates CSV and --out CSV", param_hint="--image")
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


def _predict_study(model: Path, scans: Path, candidates: Path | None, out: Path | None, *, runtime: str,
                   batch: int, overwrite: bool, spacing: float | None, window: str | None, as_json: bool,
                   others: dict[str, object]) -> None:
    """``predict --scans DIR --candidates CSV --out CSV``: every candidate of a study
    (:mod:`naslung.serving.study`)."""
    from naslung.cli.progress import progress_bar
    from naslung.data.errors import DataError
    from naslung.data.prepare import parse_window
    from naslung.outputs import STUDY_ERRORS, STUDY_PREDICTIONS
    from naslung.serving.predict import RUNTIMES, load_members, resolve_settings
    from naslung.serving.study import errors_path, predict_study

    given = [name for name, value in others.items() if value is not None]
    if given:
        raise typer.BadParameter(f"--scans predicts a whole study; {', '.join(given)} apply to --image only",
                                 param_hint="--scans")
    if candidates is None or out is None:
        raise typer.BadParameter("--scans needs --candidates CSV and --out CSV", param_hint="--scans")
    inputs = [("--model", model), ("--scans", scans), ("--candidates", candidates)]
    try:
        check_option("runtime", runtime, RUNTIMES)
        check_file_output(out, STUDY_PREDICTIONS, "--out", overwrite=overwrite, inputs=inputs)
        check_file_output(errors_path(out), STUDY_ERRORS, "--out", overwrite=True, inputs=inputs)
        members = load_members(model)
        settings, notes = resolve_settings(members, spacing, parse_window(window) if window else None)
        report = predict_study(scans, candidates, members, settings, out, runtime=runtime, batch=batch,
                               overwrite=overwrite, progress=progress_bar(as_json))
    except (DataError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    except ImportError as exc:
        fail(str(exc))
    summary = {"out": str(report.out), "scans": report.scans, "rows": report.rows,
               "resumed_after_scans": report.skipped_scans, "errors": len(report.errors),
               "errors_file": str(report.errors_file), "notes": notes}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo(f"{report.rows} candidates of {report.scans} scans -> {report.out}"
               + (f" (resumed: {report.skipped_scans} scans were done)" if report.skipped_scans else ""))
    if report.errors:
        typer.echo(f"{len(report.errors)} errors (rows left out), listed in {report.errors_file}")
