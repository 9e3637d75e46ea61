"""ONNX export of a NAS-Lung network and an ONNX Runtime runner (the ``onnx`` extra of the package).

:func:`export_onnx` writes the BN-folded eval model (:func:`naslung.models.fuse.fold_batchnorm`) with a
dynamic batch axis: input ``"image"`` ``(B, C_in, *S)`` float32, output ``"logits"`` ``(B, num_classes)``.
The model's :attr:`~naslung.models.factory.NASLungNet.config` travels in the file's metadata
(``naslung_model_config``), so a runner knows the input layout it expects. :class:`OnnxRunner` runs such a
file on the CPU with a chosen number of threads, and :class:`OpenVinoRunner` runs the same file with OpenVINO
(the ``openvino`` extra), which fuses the conv, bias and elementwise chains. :func:`cached_export` exports a
checkpoint once and reuses the file (``naslung predict --runtime onnx|openvino``).

Measured with ``benchmarks/engines.py`` (one thread, this project's AVX-512 VM, the same ONNX file): OpenVINO
ran Model-1 at batch 1 in 6.3 ms against 9.2 ms on the torch serving path and 12.5 ms on ONNX Runtime; the mid
model 8.1 against 18.9 and 24.7 ms; batch 32 Model-1 4.5 against 4.6 ms per nodule. On an AVX2-only CPU
(issue 22's figures) it lost at batch 32 for Model-1 (5.7 against 3.1 ms) and won at batch 1 for the mid
model (10.7 against 16.4 ms). No engine wins everywhere, so torch stays the default and OpenVINO is a choice.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from naslung import schemas
from naslung.atomic import atomic_path
from naslung.models.blocks.cbam import direct_spatial_conv
from naslung.models.fuse import fold_batchnorm

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
METADATA_KEY = schemas.ONNX_METADATA_KEY
#: ONNX opset written by :func:`export_onnx` (ONNX Runtime >= 1.16 runs it).
OPSET = 17
#: Version of what :func:`export_onnx` writes; part of :func:`cached_export`'s key.
EXPORT_VERSION = 1
#: One line that says how to get the optional runtime.
INSTALL_HINT = "pip install 'naslung[onnx]'"


OPENVINO_HINT = "pip install 'naslung[openvino]'"


def require_openvino(what: str = "OpenVINO") -> None:
    """Raise ``ImportError`` with one line that says how to install, unless openvino (and onnx, which writes
    the file it reads) import."""
    require_onnx(what)
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ImportError(f"{what} needs openvino (not installed): {OPENVINO_HINT}") from None


def require_onnx(what: str = "ONNX") -> None:
    """Raise ``ImportError`` with one line that says how to install, unless onnx and onnxruntime import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} needs onnx and onnxruntime ({exc.name or exc} is missing): "
                          f"{INSTALL_HINT}") from None


def export_onnx(model: nn.Module, path: str | Path, size: int = 32, opset: int = OPSET) -> Path:
    """Write ``model`` (BN folded, eval mode) as ONNX with a dynamic batch axis; returns ``path``.

    Args:
        model: a NAS-Lung network (``spatial_dims``, ``config`` attributes) or any module mapping
            ``(B, 1, *[size] * 3)`` to logits; it is copied, not changed.
        path: the ``.onnx`` file to write (parent folders are created; the file is replaced atomically).
        size: the spatial side of the example input used for tracing (the graph keeps it fixed; the batch
            axis stays dynamic).
    """
    import onnx

    dims = int(getattr(model, "spatial_dims", 3))
    in_ch = int(getattr(model, "config", {}).get("in_channels", 1))
    folded = fold_batchnorm(model.cpu() if next(model.parameters()).device.type != "cpu" else model)
    example = torch.zeros(2, in_ch, *([size] * dims))
    path = Path(path)
    with atomic_path(path) as tmp:  # a unique temporary: concurrent exports of one file never mix
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            with direct_spatial_conv(folded):  # ONNX has no rfftn: export the gate as the conv it is
                torch.onnx.export(
                    folded, (example,), str(tmp), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
        proto = onnx.load(str(tmp))
        config = dict(getattr(model, "config", {}))
        config["input_size"] = size
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(config, sort_keys=True)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def export_key(checkpoint: str | Path, size: int, opset: int = OPSET) -> str:
    """Cache key of the export of ``checkpoint``: a hash of its bytes, the input side, the opset, the
    exporter's version and torch's (a retrained run at the same path gets a new key)."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    meta = f"{size}|{opset}|{EXPORT_VERSION}|{torch.__version__}"
    return hashlib.sha256(f"{digest.hexdigest()}|{meta}".encode()).hexdigest()[:24]


def cached_export(model: nn.Module, checkpoint: str | Path, size: int,
                  cache: str | Path | None = None) -> Path:
    """The ONNX file of ``model`` as loaded from ``checkpoint``, exported on first use (atomic write).

    Stored as ``<cache>/<export_key>.onnx`` (``cache`` None: ``naslung.paths.cache_dir("onnx")``), so a run
    folder is never written to; a later call with the same checkpoint bytes, ``size``, opset and torch
    reuses the file. ``model`` must hold ``checkpoint``'s weights (e.g. ``train.checkpoint.load_model``).
    """
    if cache is None:
        from naslung.paths import cache_dir

        cache = cache_dir("onnx")
    path = Path(cache) / f"{export_key(checkpoint, size)}.onnx"
    if not path.is_file():
        export_onnx(model, path, size=size)
    return path


class OnnxRunner:
    """Run an exported model with ONNX Runtime on the CPU: ``(B, C_in, *S)`` -> ``(B, num_classes)`` logits.

    Args:
        path: a file written by :func:`export_onnx`.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config: dict[str, Any] = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits ``(B, num_classes)`` float32 for a float input ``(B, C_in, *S)``."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def predict_proba(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Malignancy probability ``softmax(logits)[:, 1]``: ``(B,)`` float64."""
        logits = self(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e[:, 1] / e.sum(axis=1)


class OpenVinoRunner(OnnxRunner):
    """Run an exported model with OpenVINO on the CPU; the interface of :class:`OnnxRunner`.

    OpenVINO compiles the ONNX graph for this CPU (its plugin fuses conv + bias + activation and CBAM's
    elementwise chain) with ``threads`` inference threads and the latency hint. Its CPU plugin carries its
    own oneDNN: with ``ONEDNN_MAX_CPU_ISA=AVX2`` set (AVX2 emulation on an AVX-512 machine) OpenVINO 2026.4
    returned empty outputs, so this runner refuses to run under that variable rather than return nothing.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import os

        import openvino as ov

        if os.environ.get("ONEDNN_MAX_CPU_ISA"):
            raise RuntimeError("OpenVINO returns empty outputs while ONEDNN_MAX_CPU_ISA is set; unset it or "
                               "use --runtime torch|onnx")
        self.path = Path(path)
        core = ov.Core()
        properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", properties)
        self.request = self.compiled.create_infer_request()
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        self.config: dict[str, Any] = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits ``(B, num_classes)`` float32 for a float input ``(B, C_in, *S)``."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = self.request.infer({0: x})
        return np.array(next(iter(out.values())), dtype=np.float32, copy=True)
