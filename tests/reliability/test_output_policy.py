"""The output policy (:mod:`naslung.outputs`) at every command that writes: fault injection from tables.

One module fixture builds a small world (a crop dataset, a finished run, a LUNA16-style tree, files of many
kinds); each case runs one command on it and asserts exit 2, one ``error:`` line naming the path (and what
it holds), and that every file of the world is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from naslung import outputs

from .runtime_support import TRAIN_FAST, cli, error_line, write_tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from luna_synth import make_tree  # noqa: E402

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root``: relative path -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    data = write_tiny(root / "d.h5")
    run = root / "run"
    trained = cli("train", "--data", data, "--fold", 1, "--out", run, *TRAIN_FAST, "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    tree = make_tree(root / "luna")
    scan = tree.scans[0]
    loose = root / "loose"  # files of every kind, outside any input
    loose.mkdir()
    for name in ("best.pt", "result.json", "config.json"):
        shutil.copy(run / name, loose / name)
    (loose / "user.png").write_bytes(PNG_BYTES)
    (loose / "notes.json").write_text(json.dumps({"mine": True}))
    (loose / "fig.png").write_bytes(PNG_BYTES)
    (loose / "fig.json").write_text(json.dumps({"mine": True}))
    (loose / "table.csv").write_text("a,b\n1,2\n")
    (loose / "page.html").write_text("<!DOCTYPE html><html><title>mine</title></html>")
    shutil.copy(tree.root / "labels.csv", loose / "labels.csv")
    user = root / "user"  # a user's folder: their own config.json and notes
    user.mkdir()
    (user / "config.json").write_text(json.dumps({"lr": 1}))
    (user / "notes.txt").write_text("mine")
    user_luna = root / "user_luna"  # a LUNA16-style tree without a phantom manifest
    shutil.copytree(tree.root, user_luna)
    return {"root": root, "DATA": data, "RUN": run, "LUNA": tree.root, "USER": user, "USERLUNA": user_luna,
            "MHD": tree.root / f"subset{scan.subset}" / f"{scan.uid}.mhd",
            "RAW": tree.root / f"subset{scan.subset}" / f"{scan.uid}.raw", "LOOSE": loose}


def _argv(world: dict[str, Path], tmp_path: Path, args: list[str]) -> list[str]:
    out = []
    for arg in args:
        for key in sorted(world, key=len, reverse=True):
            if key.isupper() and key in arg:
                arg = arg.replace(key, str(world[key]))
        out.append(arg.replace("TMP", str(tmp_path)))
    return out


PREDICT = ["predict", "--model", "RUN", "--image", "MHD", "--coords", "0,0,-75"]
ENSIZE = ["ensemble-size", "--runs", "RUN", "--fold", "1", "--sizes", "1", "--repeats", "1"]
#: (id, command line, the path the line must name, fragments it must hold)
REFUSED: list[tuple[str, list[str], str, tuple[str, ...]]] = [
    # predict --overlay
    ("overlay-over-checkpoint", [*PREDICT, "--overlay", "LOOSE/best.pt"], "LOOSE/best.pt",
     ("PyTorch checkpoint", "not a PNG")),
    ("overlay-over-run-file", [*PREDICT, "--overlay", "RUN/best.pt"], "RUN/best.pt", ("inside the input",)),
    ("overlay-over-image", [*PREDICT, "--overlay", "MHD"], "MHD", ("is the input --image",)),
    ("overlay-over-raw", [*PREDICT, "--overlay", "RAW"], "RAW", ("raw image data",)),
    ("overlay-over-result", [*PREDICT, "--overlay", "LOOSE/result.json"], "LOOSE/result.json",
     ("training result",)),
    ("overlay-over-csv", [*PREDICT, "--overlay", "LOOSE/table.csv"], "LOOSE/table.csv", ("CSV table",)),
    ("overlay-png-no-overwrite", [*PREDICT, "--overlay", "LOOSE/user.png"], "LOOSE/user.png",
     ("--overwrite",)),
    ("overlay-is-dir", [*PREDICT, "--overlay", "USER"], "USER", ("is a directory",)),
    # data prepare --out
    ("prepare-over-raw", ["data", "prepare", "--luna", "LUNA", "--out", "RAW"], "RAW", ("inside the input",)),
    ("prepare-over-labels", ["data", "prepare", "--luna", "LUNA", "--out", "LUNA/labels.csv"],
     "LUNA/labels.csv", ("inside the input --luna",)),
    ("prepare-over-label-table", ["data", "prepare", "--luna", "LUNA", "--out", "LOOSE/labels.csv"],
     "LOOSE/labels.csv", ("label table", "not a naslung crop dataset")),
    ("prepare-over-checkpoint-overwrite", ["data", "prepare", "--luna", "LUNA", "--out", "LOOSE/best.pt",
                                           "--overwrite"], "LOOSE/best.pt", ("PyTorch checkpoint",)),
    ("prepare-over-dataset", ["data", "prepare", "--luna", "LUNA", "--out", "DATA"], "DATA",
     ("--overwrite",)),
    ("prepare-over-own-labels", ["data", "prepare", "--luna", "LUNA", "--out", "LOOSE/labels.csv",
                                 "--labels", "LOOSE/labels.csv"], "LOOSE/labels.csv",
     ("is the input --labels",)),
    # export --onnx
    ("onnx-over-best", ["export", "RUN", "--onnx", "RUN/best.pt"], "RUN/best.pt", ("inside the input",)),
    ("onnx-over-checkpoint", ["export", "RUN", "--onnx", "LOOSE/best.pt"], "LOOSE/best.pt",
     ("PyTorch checkpoint",)),
    ("onnx-over-result", ["export", "RUN/best.pt", "--onnx", "LOOSE/result.json", "--overwrite"],
     "LOOSE/result.json", ("training result",)),
    ("onnx-over-dataset", ["export", "RUN", "--onnx", "DATA"], "DATA", ("crop dataset",)),
    ("onnx-over-source", ["export", "LOOSE/best.pt", "--onnx", "LOOSE/best.pt"], "LOOSE/best.pt",
     ("is the input",)),
    # ensemble-size --plot (and the JSON beside it)
    ("plot-over-checkpoint", [*ENSIZE, "--plot", "LOOSE/best.pt"], "LOOSE/best.pt", ("PyTorch checkpoint",)),
    ("plot-inside-run", [*ENSIZE, "--plot", "RUN/fig.png"], "RUN/fig.png", ("inside the input --runs",)),
    ("plot-json-sibling", [*ENSIZE, "--plot", "LOOSE/fig.png", "--overwrite"], "LOOSE/fig.json",
     ("JSON file naslung did not write",)),
    # data preview, data labels, report
    ("preview-over-dataset", ["data", "preview", "DATA", "--out", "DATA"], "DATA", ("is the input",)),
    ("preview-over-result", ["data", "preview", "DATA", "--out", "LOOSE/result.json"], "LOOSE/result.json",
     ("training result",)),
    ("labels-over-csv", ["data", "labels", "--out", "LOOSE/table.csv", "--overwrite"], "LOOSE/table.csv",
     ("CSV table",)),
    ("report-over-html", ["report", "RUN", "--out", "LOOSE/page.html", "--overwrite"], "LOOSE/page.html",
     ("not a naslung HTML report",)),
    ("report-over-result", ["report", "RUN", "--out", "RUN/result.json"], "RUN/result.json",
     ("inside the input",)),
    # folder outputs
    ("phantom-into-luna", ["data", "phantom", "--out", "USERLUNA", "--limit", "2"], "USERLUNA",
     ("LUNA16-style tree",)),
    ("phantom-into-run", ["data", "phantom", "--out", "RUN", "--limit", "2"], "RUN", ("training run",)),
    ("train-into-user", ["train", "--data", "DATA", "--out", "USER", *TRAIN_FAST], "USER",
     ("naslung did not write", "config.json")),
    ("train-into-file", ["train", "--data", "DATA", "--out", "LOOSE/notes.json", *TRAIN_FAST],
     "LOOSE/notes.json", ("not a folder",)),
    ("train-into-luna", ["train", "--data", "DATA", "--out", "LUNA", *TRAIN_FAST], "LUNA",
     ("LUNA16-style tree",)),
    ("cv-into-run", ["cv", "--data", "DATA", "--out", "RUN", "--folds", "1", *TRAIN_FAST], "RUN",
     ("training run", "not a naslung cv folder")),
    ("cv-into-user", ["cv", "--data", "DATA", "--out", "USER", "--folds", "1", *TRAIN_FAST], "USER",
     ("naslung did not write",)),
    ("search-into-run", ["search", "--data", "DATA", "--out", "RUN", "--epochs", "1"], "RUN",
     ("training run", "not a naslung search folder")),
    ("search-into-user", ["search", "--data", "DATA", "--out", "USER", "--epochs", "1"], "USER",
     ("naslung did not write",)),
    ("explain-inside-run", ["explain", "RUN", "--data", "DATA", "--fold", "1", "--out", "RUN/explain"],
     "RUN/explain", ("inside the input RUN",)),
    ("explain-into-user", ["explain", "RUN", "--data", "DATA", "--fold", "1", "--out", "USER"], "USER",
     ("naslung did not write",)),
    ("ablate-into-run", ["ablate", "--data", "DATA", "--archs", "[4,4,[4],[4],[4]]", "--out", "RUN"], "RUN",
     ("training run",)),
    ("reproduce-into-user", ["reproduce", "--data", "DATA", "--out", "USER"], "USER",
     ("naslung did not write",)),
    ("demo-into-run", ["demo", "--out", "RUN"], "RUN", ("training run",)),
    # --resume with nothing to resume
    ("train-resume-nothing", ["train", "--data", "DATA", "--out", "TMP/new", "--resume", *TRAIN_FAST],
     "TMP/new", ("--resume", "nothing to resume")),
    ("search-resume-nothing", ["search", "--data", "DATA", "--out", "TMP/new", "--resume"], "TMP/new",
     ("--resume", "nothing to resume")),
]


@pytest.mark.parametrize(("args", "named", "fragments"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused(world: dict[str, Path], tmp_path: Path, args: list[str], named: str,
                 fragments: tuple[str, ...]) -> None:
    before = snapshot(world["root"])
    line = error_line(cli(*_argv(world, tmp_path, args)))
    assert _argv(world, tmp_path, [named])[0] in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(world["root"]) == before
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_overwrite_replaces_a_file_of_the_right_kind(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "montage.png"
    assert cli("data", "preview", world["DATA"], "--out", out, "--n", "2").exit_code == 0
    first = out.read_bytes()
    assert "--overwrite" in error_line(cli("data", "preview", world["DATA"], "--out", out, "--n", "2"))
    assert out.read_bytes() == first
    result = cli("data", "preview", world["DATA"], "--out", out, "--n", "3", "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != first and outputs.is_png(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["montage.png"]  # no temporary left


def test_ensemble_size_overwrite_and_schema(world: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "fig7.png"
    args = [*_argv(world, tmp_path, ENSIZE), "--plot", str(plot)]
    assert cli(*args).exit_code == 0
    assert json.loads(plot.with_suffix(".json").read_text())["schema"] == "naslung-ensemble-size"
    assert "--overwrite" in error_line(cli(*args))
    assert cli(*args, "--overwrite").exit_code == 0


# ---- the policy's own decisions, without a command --------------------------------------------------------
def _run_folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


TRAIN_CONFIG = json.dumps({"schema": "naslung-train-config"}).encode()
FOLDERS: list[tuple[str, outputs.FolderKind, dict[str, bytes], bool]] = [
    ("empty", outputs.TRAIN_RUN, {}, True),
    ("only-lock-and-temporaries", outputs.TRAIN_RUN, {".naslung.lock": b"{}", ".last.pt.abc.tmp": b"x"},
     True),
    ("killed-after-config", outputs.TRAIN_RUN, {"config.json": TRAIN_CONFIG}, True),
    ("run-with-user-notes", outputs.TRAIN_RUN, {"config.json": TRAIN_CONFIG, "notes.txt": b"x"}, True),
    ("user-config", outputs.TRAIN_RUN, {"config.json": b'{"lr": 1}'}, False),
    ("checkpoint-without-config", outputs.TRAIN_RUN, {"last.pt": b"PK\x03\x04"}, False),
    ("cv-killed-in-fold", outputs.CV_FOLDER, {"fold_1/config.json": TRAIN_CONFIG}, True),
    ("cv-empty-fold", outputs.CV_FOLDER, {"fold_1/.naslung.lock": b"{}"}, True),
    ("cv-user-file", outputs.CV_FOLDER, {"fold_1/config.json": TRAIN_CONFIG, "data.h5": b"x"}, False),
    ("cv-of-a-run", outputs.CV_FOLDER, {"config.json": TRAIN_CONFIG}, False),
    ("search-killed-early", outputs.SEARCH, {"latency_model.json": b"{}"}, True),
    ("search-foreign-plot", outputs.SEARCH, {"pareto.png": b"not a png"}, False),
    ("phantom-no-manifest", outputs.PHANTOM, {"labels.csv": b"a\n", "subset0/x.mhd": b"NDims = 3\n"}, False),
    ("phantom-empty-subsets", outputs.PHANTOM, {"subset0/.x.tmp": b""}, True),
    ("phantom-manifest", outputs.PHANTOM, {"phantom.json": b'{"schema": "naslung-phantom"}',
                                           "labels.csv": b"a\n"}, True),
    ("explain-partial", outputs.EXPLAIN, {"nodules/a.png": PNG_BYTES, "tsne.png": PNG_BYTES}, True),
    ("explain-foreign", outputs.EXPLAIN, {"nodules/a.txt": b"x"}, False),
]


@pytest.mark.parametrize(("kind", "files", "accepted"), [c[1:] for c in FOLDERS],
                         ids=[c[0] for c in FOLDERS])
def test_folder_kinds(tmp_path: Path, kind: outputs.FolderKind, files: dict[str, bytes],
                      accepted: bool) -> None:
    folder = _run_folder(tmp_path / "out", files)
    before = snapshot(tmp_path)
    if accepted:
        assert outputs.check_folder_output(folder, kind) == folder
    else:
        with pytest.raises(outputs.OutputRefusedError, match=str(folder)):
            outputs.check_folder_output(folder, kind)
    assert snapshot(tmp_path) == before


FILES: list[tuple[str, outputs.FileKind, str, bytes, bool, str]] = [
    ("png-over-png", outputs.PNG, "a.png", PNG_BYTES, True, ""),
    ("png-over-png-no-overwrite", outputs.PNG, "a.png", PNG_BYTES, False, "--overwrite"),
    ("png-suffix-wrong-content", outputs.PNG, "a.png", b"text", True, "not a PNG"),
    ("png-over-mhd", outputs.PNG, "a.mhd", b"ObjectType = Image\nNDims = 3\n", True, "MetaImage header"),
    ("onnx-without-naslung-key", outputs.ONNX, "m.onnx", b"\x08\x07\x12\x07pytorch", True,
     "not a naslung"),
    ("onnx-over-onnx", outputs.ONNX, "m.onnx", b"\x08\x07 naslung_model_config", True, ""),
    ("dataset-over-hdf5", outputs.CROP_DATASET, "d.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64, True,
     "HDF5 file"),
    ("report-over-report", outputs.REPORT, "r.html", b"<!DOCTYPE html>\n<html><head><title>naslung report: x",
     True, ""),
    ("dataset-over-nifti", outputs.CROP_DATASET, "x.nii.gz", b"\x1f\x8b\x08\x00", True, "NIfTI"),
]


@pytest.mark.parametrize(("kind", "name", "data", "overwrite", "refusal"), [c[1:] for c in FILES],
                         ids=[c[0] for c in FILES])
def test_file_kinds(tmp_path: Path, kind: outputs.FileKind, name: str, data: bytes, overwrite: bool,
                    refusal: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    if not refusal:
        assert outputs.check_file_output(path, kind, "--out", overwrite=overwrite) == path
    else:
        with pytest.raises(outputs.OutputRefusedError, match=refusal) as err:
            outputs.check_file_output(path, kind, "--out", overwrite=overwrite)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == data


def test_symlink_to_an_input_is_the_input(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    source.write_bytes(PNG_BYTES)
    link = tmp_path / "link.png"
    link.symlink_to(source)
    with pytest.raises(outputs.OutputRefusedError, match="is the input --image"):
        outputs.check_file_output(link, outputs.PNG, "--overlay", overwrite=True,
                                  inputs=[("--image", source)])
    hard = tmp_path / "hard.png"
    hard.hardlink_to(source)
    with pytest.raises(outputs.OutputRefusedError, match="is the input"):
        outputs.check_file_output(hard, outputs.PNG, "--overlay", overwrite=True,
                                  inputs=[("--image", source)])
    assert np.frombuffer(source.read_bytes(), np.uint8).size == len(PNG_BYTES)
