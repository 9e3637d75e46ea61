"""The output policy of every naslung command: what a command may write over, and what it refuses.

A **file output** (``predict --overlay``, ``data prepare --out``, ``export --onnx``, ``ensemble-size --plot``,
``report --out``, ...) has a :class:`FileKind`: the suffixes and the content signature of what naslung
writes there. An existing file is replaced (atomically, by the writer) only when it holds that kind *and*
``--overwrite`` is given; a file of any other content is refused even with ``--overwrite``. A path that is
one of the command's inputs, or lies inside an input folder, is refused too.

A **folder output** (``train --out``, ``cv``, ``search``, ``explain``, ``ablate``, ``data phantom --out``,
...) has a :class:`FolderKind`. A folder is accepted when it is missing, empty (nothing but empty folders and
naslung's lock and temporary files), or a folder of that kind: it holds the kind's marker file, or every
entry in it is a name that kind writes, with that name's content (a run killed part-way included). Any
other non-empty folder is refused.

Every refusal is an :class:`OutputRefusedError` (a ``ValueError``) whose message is one line naming the
option, the path and what it holds; the CLI prints it as ``error: ...`` and exits with status 2. The checks
run before any work, so a refused command has written nothing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naslung import schemas

#: An input of a command: the option that names it (``"--data"``, ``"RUN"``) and its path (None: not given).
Input = tuple[str, "str | os.PathLike[str] | None"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
#: Larger files are not parsed to recognise them (JSON outputs of naslung are far smaller).
_MAX_PARSE = 64 << 20


class OutputRefusedError(ValueError):
    """An output path the policy refuses; the message is one line naming the path and what it holds."""


_Refused = OutputRefusedError


# ---- content signatures ------------------------------------------------------------------------------------
def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _json(path: Path) -> Any:
    """``path`` parsed as JSON, or None when it is not (or too large to be a naslung JSON output)."""
    try:
        if path.stat().st_size > _MAX_PARSE:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def naslung_schema(path: Path) -> str | None:
    """The ``schema`` of a naslung JSON file (``"naslung-..."``), or None."""
    data = _json(path)
    schema = data.get("schema") if isinstance(data, dict) else None
    return schema if isinstance(schema, str) and schema.startswith("naslung-") else None


def json_schema(*schemas: str, keys: Sequence[str] = ()) -> Callable[[Path], bool]:
    """Signature of a JSON object whose ``schema`` is one of ``schemas`` (or, for files written before it had
    one, that holds every key of ``keys``)."""

    def check(path: Path) -> bool:
        data = _json(path)
        if not isinstance(data, dict):
            return False
        if data.get("schema") in schemas:
            return True
        return bool(keys) and all(k in data for k in keys)

    return check


def is_png(path: Path) -> bool:
    return _head(path, 8) == _PNG_MAGIC


def is_crop_dataset(path: Path) -> bool:
    """An HDF5 file whose ``schema`` attribute is ``naslung-crops``."""
    if _head(path, 8) != _HDF5_MAGIC:
        return False
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            schema = h5.attrs.get("schema")
    except Exception:  # noqa: BLE001 - any failure to read it means "not a naslung dataset"
        return False
    if isinstance(schema, bytes):
        schema = schema.decode(errors="replace")
    return schema == schemas.CROPS


def is_onnx(path: Path) -> bool:
    """An ONNX ModelProto (field 1, ir_version, first) carrying naslung's model-config metadata key."""
    try:
        if _head(path, 1) != b"\x08" or path.stat().st_size > (2 << 30):
            return False
        return schemas.ONNX_METADATA_KEY.encode() in path.read_bytes()
    except OSError:
        return False


def is_report(path: Path) -> bool:
    head = _head(path).decode("utf-8", errors="replace")
    return head.lstrip().lower().startswith("<!doctype html") and "<title>naslung report" in head


def is_label_table(path: Path) -> bool:
    """A CSV whose header holds the label-table contract columns (``naslung data labels``)."""
    first = _head(path).decode("utf-8", errors="replace").splitlines()[:1]
    header = {c.strip() for c in first[0].split(",")} if first else set()
    return set(schemas.LABEL_COLUMNS) <= header


def is_checkpoint(path: Path) -> bool:
    """A ``torch.save`` file (a zip archive)."""
    return _head(path, 4) == _ZIP_MAGIC


def _text(path: Path) -> bool:
    """A UTF-8 text file (for CSV/markdown outputs recognised by name)."""
    head = _head(path)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a multi-byte character cut by the read
    return True


def _jsonl(path: Path) -> bool:
    """A JSONL log: its first line is a JSON object (an empty log counts)."""
    first = _head(path).decode("utf-8", errors="replace").splitlines()[:1]
    if not first:
        return True
    try:
        return isinstance(json.loads(first[0]), dict)
    except ValueError:
        return len(first[0]) >= 4000  # a first line longer than the read: not judged


# ---- kinds -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileKind:
    """What naslung writes to one file output: a name, its suffixes, and a content signature."""

    name: str
    suffixes: tuple[str, ...]
    signature: Callable[[Path], bool]

    def matches(self, path: Path) -> bool:
        """``path`` (an existing file) has one of the suffixes and the signature."""
        name = path.name.lower()
        return any(name.endswith(s) for s in self.suffixes) and self.signature(path)


CROP_DATASET = FileKind("naslung crop dataset (HDF5)", (".h5", ".hdf5", ".hdf"), is_crop_dataset)
PNG = FileKind("PNG image", (".png",), is_png)
ONNX = FileKind("naslung ONNX model", (".onnx",), is_onnx)
REPORT = FileKind("naslung HTML report", (".html", ".htm"), is_report)
LABEL_TABLE = FileKind("naslung label table (CSV)", (".csv",), is_label_table)
ENSEMBLE_SIZE_JSON = FileKind("naslung ensemble-size study (JSON)", (".json",),
                              json_schema(schemas.ENSEMBLE_SIZE, keys=("fold", "runs", "vote", "rows")))
PREPARE_ERRORS = FileKind("naslung list of scans prepare refused (JSON)", (".json",),
                          json_schema(schemas.PREPARE_ERRORS, keys=("dataset", "refused")))
STUDY_PREDICTIONS = FileKind("naslung study predictions (CSV)", (".csv",),
                             lambda p: _head(p, 64).startswith(b"seriesuid,coordX,coordY,coordZ,probability"))
STUDY_ERRORS = FileKind("naslung list of study prediction errors (JSON)", (".json",),
                        json_schema(schemas.STUDY_ERRORS))
EVALUATION_JSON = FileKind("naslung evaluation of a model on a dataset (JSON)", (".json",),
                           json_schema(schemas.EVALUATION))
FILE_KINDS: tuple[FileKind, ...] = (CROP_DATASET, PNG, ONNX, REPORT, LABEL_TABLE, ENSEMBLE_SIZE_JSON,
                                    PREPARE_ERRORS, STUDY_PREDICTIONS, STUDY_ERRORS, EVALUATION_JSON)


@dataclass(frozen=True)
class FolderKind:
    """What naslung writes into one folder output.

    ``files``: entry-name patterns (fnmatch) of its files, each with a content signature (None: any file).
    ``folders``: entry-name patterns of its sub-folders, each with the kind it must be (None: any empty one).
    ``marker``: a check that the folder holds this kind's own record (e.g. a run's ``config.json``); a folder
    with the marker is of the kind whatever else it holds. ``needs_marker``: a non-empty folder without it is
    refused even when its names match (the phantom tree: a user's LUNA16 tree has the same names).
    """

    name: str
    files: dict[str, Callable[[Path], bool] | None] = field(default_factory=dict)
    folders: dict[str, FolderKind | None] = field(default_factory=dict)
    marker: Callable[[Path], bool] | None = None
    needs_marker: bool = False

    def matches(self, path: Path) -> bool:
        """``path`` (an existing folder) is empty, holds the marker, or holds only this kind's entries."""
        entries = _entries(path)
        if not entries:
            return True
        if self.marker is not None and self.marker(path):
            return True
        if self.needs_marker:
            return all(e.is_dir() and not _entries_deep(e) for e in entries)
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                kinds = [k for pattern, k in self.folders.items() if fnmatch.fnmatchcase(entry.name, pattern)]
                if not _entries_deep(entry):
                    continue
                if not kinds or not any(k is not None and k.matches(entry) for k in kinds):
                    return False
            else:
                checks = [c for pattern, c in self.files.items() if fnmatch.fnmatchcase(entry.name, pattern)]
                if not checks or not any(c is None or c(entry) for c in checks):
                    return False
        return True


def _transient(name: str) -> bool:
    """naslung's lock and temporary files (``.naslung.lock``, ``.lock``, ``.<name>.<random>.tmp``)."""
    return name == ".lock" or (name.startswith(".") and (name.endswith(".tmp") or name.endswith(".lock")))


def _entries(path: Path) -> list[Path]:
    try:
        return sorted(e for e in path.iterdir() if not _transient(e.name))
    except OSError:
        return []


def _entries_deep(path: Path) -> bool:
    """Whether ``path`` holds anything but (nested) empty folders and transient files."""
    return any(not e.is_dir() or e.is_symlink() or _entries_deep(e) for e in _entries(path))


def _any_json(path: Path) -> bool:
    return _json(path) is not None


def _has(name: str, check: Callable[[Path], bool]) -> Callable[[Path], bool]:
    return lambda folder: (folder / name).is_file() and check(folder / name)


_RUN_CONFIG = json_schema(schemas.TRAIN_CONFIG)
_RUN_RESULT = json_schema(schemas.TRAIN_RESULT)
TRAIN_RUN = FolderKind(
    "training run",
    files={"config.json": _RUN_CONFIG, "result.json": _RUN_RESULT, "epochs.jsonl": _jsonl,
           "last.pt": is_checkpoint, "best.pt": is_checkpoint, "predictions.csv": _text,
           "predictions.json": _any_json, "baselines.json": _any_json},
    marker=lambda f: _has("config.json", _RUN_CONFIG)(f) or _has("result.json", _RUN_RESULT)(f),
    needs_marker=True)
CV_FOLDER = FolderKind(
    "cv folder", files={"cv.json": json_schema(schemas.CV), "cv.csv": _text},
    folders={"fold_*": TRAIN_RUN}, marker=_has("cv.json", json_schema(schemas.CV)))
MEMBERS_CV = FolderKind("member cv folder (cv --members)", folders={"*": CV_FOLDER})
_SEARCH_JSON = json_schema(schemas.SEARCH_CONFIG, schemas.SEARCH_PARETO, schemas.MEMBERS,
                           schemas.LATENCY_MODEL)
SEARCH = FolderKind(
    "search folder",
    files={"trials.jsonl": _jsonl, "search_config.json": json_schema(schemas.SEARCH_CONFIG),
           "latency_model.json": _any_json, "pareto.json": _SEARCH_JSON,
           "members.json": json_schema(schemas.MEMBERS), "pareto.png": is_png},
    folders={"members_cv": MEMBERS_CV},
    marker=_has("search_config.json", json_schema(schemas.SEARCH_CONFIG)))
_EXPLAIN_NODULES = FolderKind("explain nodules folder", files={"*.png": is_png})
EXPLAIN = FolderKind(
    "explain folder",
    files={"montage.png": is_png, "tsne.png": is_png, "dbi.csv": _text,
           "dbi.json": _any_json, "explain.json": json_schema(schemas.EXPLAIN)},
    folders={"nodules": _EXPLAIN_NODULES}, marker=_has("explain.json", json_schema(schemas.EXPLAIN)))
_ABLATION_VARIANT = FolderKind("ablation variant folder", folders={"*": CV_FOLDER})
ABLATION = FolderKind(
    "ablation folder", files={"ablation.json": json_schema(schemas.ABLATION), "ablation.md": _text},
    folders={"*": _ABLATION_VARIANT}, marker=_has("ablation.json", json_schema(schemas.ABLATION)))
DEMO = FolderKind(
    "demo folder",
    files={"demo_summary.json": _any_json, "report.html": is_report},
    folders={"search": SEARCH, "members": MEMBERS_CV, "explain": EXPLAIN},
    marker=_has("demo_summary.json", _any_json))
REPRODUCE = FolderKind(
    "reproduce folder",
    files={"reproduce.json": json_schema(schemas.REPRODUCE),
           "results.json": json_schema(schemas.REPRODUCE_RESULTS), "results.md": _text,
           "report.html": is_report},
    folders={"search": SEARCH, "members": MEMBERS_CV, "ablate": ABLATION, "explain": EXPLAIN},
    marker=_has("reproduce.json", json_schema(schemas.REPRODUCE)))
_PHANTOM_SUBSET = FolderKind("phantom subset", files={"*.mhd": _text, "*.raw": None})
PHANTOM = FolderKind(
    "LIDC phantom tree",
    files={"phantom.json": json_schema(schemas.PHANTOM), "labels.csv": _text, "annotations.csv": _text},
    folders={"subset[0-9]": _PHANTOM_SUBSET}, marker=_has("phantom.json", json_schema(schemas.PHANTOM)),
    needs_marker=True)
FOLDER_KINDS: tuple[FolderKind, ...] = (TRAIN_RUN, CV_FOLDER, SEARCH, EXPLAIN, ABLATION, REPRODUCE, DEMO,
                                        PHANTOM)


# ---- what an existing path holds (for the refusal message) -------------------------------------------------
_SCHEMA_NAMES = {
    schemas.TRAIN_CONFIG: "a naslung training config", schemas.TRAIN_RESULT: "a naslung training result",
    schemas.CV: "a naslung cv summary", schemas.SEARCH_CONFIG: "a naslung search config",
    schemas.SEARCH_PARETO: "a naslung Pareto front", schemas.MEMBERS: "a naslung members file",
    schemas.EXPLAIN: "a naslung explain summary", schemas.ABLATION: "a naslung ablation summary",
    schemas.PHANTOM: "a naslung phantom manifest", schemas.REPRODUCE: "a naslung reproduce status",
}


def describe(path: str | os.PathLike[str]) -> str:
    """A few words on what ``path`` holds: ``"a naslung training run"``, ``"a PyTorch checkpoint"``, ..."""
    path = Path(path)
    if path.is_dir():
        return _describe_folder(path)
    if not path.exists():
        return "nothing"
    for kind in FILE_KINDS:
        if kind.matches(path):
            return f"a {kind.name}"
    head = _head(path, 512)
    size = _size(path)
    suffix = path.suffix.lower()
    if head.startswith(_ZIP_MAGIC):
        return "a PyTorch checkpoint" if suffix in (".pt", ".pth", ".ckpt") else "a zip archive"
    if head.startswith(_HDF5_MAGIC):
        return "an HDF5 file that is not a naslung crop dataset"
    if head.startswith(_PNG_MAGIC):
        return "a PNG image"
    if head.startswith(_GZIP_MAGIC):
        return "gzip data" + (" (a NIfTI image)" if path.name.lower().endswith(".nii.gz") else "")
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "a NIfTI image"
    if head[128:132] == b"DICM":
        return "a DICOM file"
    schema = naslung_schema(path) if suffix == ".json" else None
    if schema:
        return _SCHEMA_NAMES.get(schema, f"a naslung {schema[len('naslung-'):]} file")
    text = head.decode("utf-8", errors="replace")
    if re.search(r"^\s*(ObjectType|NDims|ElementDataFile)\s*=", text, re.MULTILINE):
        return "a MetaImage header"
    if suffix == ".raw":
        return f"raw image data ({size})"
    if suffix == ".csv" and text:
        columns = [c.strip() for c in text.splitlines()[0].split(",")]
        shown = ", ".join(columns[:4]) + (", ..." if len(columns) > 4 else "")
        return f"a CSV table (columns {shown})"
    if suffix == ".json" and _json(path) is not None:
        return "a JSON file naslung did not write"
    return f"a {suffix} file naslung did not write ({size})" if suffix else f"a file of {size}"


def _size(path: Path) -> str:
    try:
        n = float(path.stat().st_size)
    except OSError:
        return "unknown size"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _describe_folder(path: Path) -> str:
    for kind in FOLDER_KINDS:
        if _entries(path) and kind.matches(path):
            return f"a naslung {kind.name}"
    entries = _entries(path)
    if not entries:
        return "an empty folder"
    if any(e.is_dir() and re.fullmatch(r"subset\d", e.name) for e in entries):
        return "a LUNA16-style tree (subset folders, no phantom.json)"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} naslung did not write ({shown})"


# ---- the checks --------------------------------------------------------------------------------------------
def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return path.expanduser().absolute()


def check_not_input(path: str | os.PathLike[str], option: str, inputs: Iterable[Input] = ()) -> None:
    """Refuse ``path`` when it is one of ``inputs`` (the same file, through links too) or lies inside one."""
    path = Path(path)
    out = _resolved(path)
    for in_option, given in inputs:
        if given is None or str(given) == "":
            continue
        source = Path(given)
        src = _resolved(source)
        same = out == src
        if not same and path.exists() and source.exists():
            try:
                same = os.path.samefile(path, source)
            except OSError:
                same = False
        if same:
            raise _Refused(f"{option} {path}: is the input {in_option} {source}; write the output elsewhere")
        if src in out.parents and (source.is_dir() or not source.exists()):
            raise _Refused(f"{option} {path}: lies inside the input {in_option} {source}; write the output "
                           f"outside it")


def check_file_output(path: str | os.PathLike[str], kind: FileKind, option: str, *, overwrite: bool = False,
                      inputs: Iterable[Input] = ()) -> Path:
    """``path`` if the policy lets a command write a ``kind`` file there, else :class:`OutputRefusedError`.

    Refused: a path that is or lies inside an input; a folder; an existing file that is not ``kind``
    (suffix and signature), even with ``overwrite``; an existing ``kind`` file without ``overwrite``.
    """
    path = Path(path)
    check_not_input(path, option, inputs)
    if path.is_dir():
        raise _Refused(f"{option} {path}: is a directory ({_describe_folder(path)}); name the {kind.name} "
                       f"file to write (e.g. {path / ('out' + kind.suffixes[0])})")
    if path.exists():
        if not kind.matches(path):
            raise _Refused(f"{option} {path}: holds {describe(path)}, not a {kind.name}; naslung will not "
                           f"replace it, even with --overwrite (choose another path)")
        if not overwrite:
            raise _Refused(f"{option} {path}: already holds a {kind.name}; pass --overwrite to replace it")
    return path


def refuse_foreign_file(path: str | os.PathLike[str], kind: FileKind, option: str = "--out") -> None:
    """Library-level guard of a writer: refuse an existing file at ``path`` that is not a ``kind`` file
    (whether to replace a ``kind`` file is the command's ``--overwrite``, see :func:`check_file_output`)."""
    path = Path(path)
    if path.is_file() and not kind.matches(path):
        raise _Refused(f"{option} {path}: holds {describe(path)}, not a {kind.name}; naslung will not "
                       f"replace it (choose another path)")


def check_folder_output(path: str | os.PathLike[str], kind: FolderKind, option: str = "--out", *,
                        inputs: Iterable[Input] = ()) -> Path:
    """``path`` if a command may write a ``kind`` folder there, else :class:`OutputRefusedError`.

    Accepted: a missing or empty folder, or one of ``kind`` (see :class:`FolderKind`). Refused: a path that
    is or lies inside an input, a file, and any other non-empty folder.
    """
    path = Path(path)
    check_not_input(path, option, inputs)
    if path.exists() and not path.is_dir():
        raise _Refused(f"{option} {path}: holds {describe(path)}, not a folder; name a new or empty folder "
                       f"for the {kind.name}")
    if path.is_dir() and not kind.matches(path):
        raise _Refused(f"{option} {path}: holds {_describe_folder(path)}, not a naslung {kind.name}; "
                       f"choose a new or empty folder")
    return path
