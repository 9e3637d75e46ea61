"""`naslung export RUN_OR_CHECKPOINT --onnx out.onnx`: a trained model as ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from naslung.cli.common import fail
from naslung.outputs import ONNX, check_file_output


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to the top-level app."""
    app.command("export")(export)


def export(
    source: Path = typer.Argument(..., help="A run folder (its best.pt), a checkpoint file (.pt) or a "
                                            "bundled model NAME."),
    onnx: Path = typer.Option(..., "--onnx", help="The ONNX file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing naslung ONNX file."),
    size: int = typer.Option(32, help="Input side the graph is traced with (divisible by 8)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare ONNX Runtime with PyTorch."),
) -> None:
    """Export a trained model to ONNX (batch norm folded, dynamic batch axis) and check that ONNX Runtime
    gives the PyTorch logits within 1e-4."""
    if size < 8 or size % 8:
        raise typer.BadParameter(f"must be a positive multiple of 8, got {size}", param_hint="--size")
    from naslung.zoo.registry import is_model_name

    if is_model_name(source):  # a bundled model: its one weights file, checksum-checked
        from naslung.serving.bundled import load_bundled

        try:
            bundled = load_bundled(str(source))
        except (FileNotFoundError, ValueError) as exc:
            fail(exc)
        if len(bundled) != 1:
            fail(f"{source}: an ensemble of {len(bundled)} members; export one member's best.pt from "
                 f"{bundled[0].path.parent}")
        source = bundled[0].path / "best.pt"
    if not source.exists():
        fail(f"{source}: no such run folder, checkpoint or bundled model")
    check_file_output(onnx, ONNX, "--onnx", overwrite=overwrite, inputs=[("SOURCE", source)])
    try:
        import onnx as _onnx  # noqa: F401
        import onnxruntime as _ort  # noqa: F401
    except ImportError:
        fail("ONNX export needs the onnx extra: pip install 'naslung[onnx]'")
    import torch

    from naslung.models.onnx import OnnxRunner, export_onnx
    from naslung.train.checkpoint import load_model

    try:
        model = load_model(source)
        path = export_onnx(model, onnx, size=size)
    except (OSError, ValueError, RuntimeError) as exc:
        fail(exc)
    message = f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, {model.config['spec']})"
    if check:
        dims = int(model.spatial_dims)
        x = torch.randn(4, int(model.config.get("in_channels", 1)), *([size] * dims),
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = model(x).numpy()
        err = float(abs(OnnxRunner(path)(x) - ref).max())
        if err > 1e-4:
            fail(f"{path}: ONNX Runtime differs from PyTorch by {err:.2e} (> 1e-4)")
        message += f"; ONNX Runtime matches PyTorch (max |diff| {err:.1e})"
    typer.echo(message)
