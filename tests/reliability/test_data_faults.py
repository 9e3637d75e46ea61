"""Data-side faults (issue 8): bad headers and datasets, failed and killed writes, resource guards, orphans.

Every check runs on a tiny synthetic LUNA16 tree (``tests/data/luna_synth.py``) and takes seconds.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from luna_synth import Tree, make_tree  # noqa: E402

from naslung.cli.app import app  # noqa: E402
from naslung.data import prepare as P  # noqa: E402
from naslung.data.dataset import describe_dataset, load_dataset, read_rows, write_dataset  # noqa: E402
from naslung.data.errors import DataError  # noqa: E402
from naslung.data.images import read_geometry, read_scan  # noqa: E402
from naslung.data.metaimage import check_metaimage  # noqa: E402
from naslung.data.prepare_guards import check_memory, lock_path  # noqa: E402

SIZE, MARGIN = 8, 2


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path / "luna")


def prepare(tree: Tree, out: Path, **kw: object) -> P.PrepareReport:
    options = {"size": SIZE, "margin": MARGIN, **kw}
    return P.prepare_dataset(P.PrepareConfig(tree.root, out, **options))  # type: ignore[arg-type]


def one_line(text: str) -> str:
    return " ".join(text.split())


def edit_header(mhd: Path, key: str, value: str) -> None:
    text = mhd.read_text()
    assert re.search(rf"^{key} = ", text, flags=re.M), key
    mhd.write_text(re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M))


def first_mhd(tree: Tree, i: int = 1) -> Path:
    scan = tree.scans[i]
    return tree.root / f"subset{scan.subset}" / f"{scan.uid}.mhd"


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def assert_same_dataset(a: Path, b: Path) -> None:
    left, right = arrays_of(a), arrays_of(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)
    with h5py.File(a, "r") as ha, h5py.File(b, "r") as hb:
        skip = {"provenance"}  # holds the date and the command line
        assert {k: str(v) for k, v in ha.attrs.items() if k not in skip} == \
            {k: str(v) for k, v in hb.attrs.items() if k not in skip}


# ---------------------------------------------------------------------------------------------- MetaImage
def test_raw_larger_than_dimsize_is_refused(tree: Tree) -> None:
    mhd = first_mhd(tree)
    edit_header(mhd, "DimSize", "64 64 32")  # the file holds 40 slices: the header would cut the volume
    with pytest.raises(DataError) as err:
        read_scan(mhd)
    message = str(err.value)
    assert mhd.with_suffix(".raw").name in message and mhd.name in message
    assert "DimSize = 64 64 32" in message and "ElementType = MET_SHORT" in message
    assert "327680 bytes" in message and "implies 262144" in message


def test_short_labelled_uchar_is_refused(tree: Tree) -> None:
    mhd = first_mhd(tree)
    edit_header(mhd, "ElementType", "MET_UCHAR")  # int16 HU read as bytes would give 0..255
    with pytest.raises(DataError, match="ElementType = MET_UCHAR") as err:
        read_geometry(mhd)
    assert str(mhd.with_suffix(".raw")) in str(err.value)


def test_truncated_raw_is_refused(tree: Tree) -> None:
    mhd = first_mhd(tree)
    raw = mhd.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(DataError, match=f"{re.escape(str(raw))}: truncated"):
        check_metaimage(mhd)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("TransformMatrix", "0 0 0 0 0 0 0 0 0", "TransformMatrix = 0 0 0 0 0 0 0 0 0 is singular"),
        ("ElementSpacing", "0 0.8 1.25", "ElementSpacing = 0 0.8 1.25 must be above 0"),
        ("ElementSpacing", "nan 0.8 1.25", "bad ElementSpacing = 'nan 0.8 1.25'"),
        ("ElementSpacing", "0.8 1.25", "bad ElementSpacing"),
        ("Offset", "inf 0 0", "bad Offset"),
        ("DimSize", "64 64", "bad DimSize"),
    ],
)
def test_bad_geometry_is_blamed_on_the_mhd(tree: Tree, tmp_path: Path, key: str, value: str,
                                           fragment: str) -> None:
    """The bad scan is skipped and listed with its reason beside the dataset; the others are cut."""
    import json

    mhd = first_mhd(tree)
    edit_header(mhd, key, value)
    report = prepare(tree, tmp_path / "out.h5")
    assert len(report.refused) == 1 and report.skipped["refused_scans"] == 1
    message = report.refused[0]["reason"]
    assert message.startswith(f"{mhd}: "), message  # the .mhd, never labels.csv
    assert fragment in message and "labels.csv" not in message
    assert report.errors_file == tmp_path / "out.h5.errors.json"
    assert json.loads(report.errors_file.read_text())["refused"] == report.refused
    assert report.n_scans == 3 - 1 and (tmp_path / "out.h5").exists()  # 3 scans with nodules, one refused


# ---------------------------------------------------------------------------------------------- datasets
@pytest.fixture
def dataset(tree: Tree, tmp_path: Path) -> Path:
    out = tmp_path / "crops.h5"
    prepare(tree, out)
    return out


def _delete(name: str):
    def edit(h5: h5py.File) -> None:
        del h5[name]
    return edit


def _shorten(name: str):
    def edit(h5: h5py.File) -> None:
        data = h5[name][()]
        del h5[name]
        h5[name] = data[:-1]
    return edit


def _drop_attr(name: str):
    def edit(h5: h5py.File) -> None:
        del h5.attrs[name]
    return edit


def _set_attr(name: str, value: object):
    def edit(h5: h5py.File) -> None:
        h5.attrs[name] = value
    return edit


def _replace(name: str, value: object):
    def edit(h5: h5py.File) -> None:
        del h5[name]
        if isinstance(value, str) and value == "group":
            h5.create_group(name)
        else:
            h5[name] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_delete("labels"), "lacks array(s) ['labels']"),
        (_delete("images"), "lacks array(s) ['images']"),
        (_shorten("labels"), "rows but"),
        (_shorten("images"), "array 'images' has 3 rows but 'labels' has 4"),
        (_shorten("seriesuid"), "array 'seriesuid' has 3 rows"),
        (_drop_attr("window"), "no 'window' attribute"),
        (_set_attr("window", "[0, 0]"), "'window' [0.0, 0.0] must be finite with lo < hi"),
        (_set_attr("window", "oops"), "'window' must be two numbers"),
        (_replace("labels", "group"), "'labels' is a Group, not an array"),
        (_replace("labels", np.array([0, 1, 7, 1])), "row 2 holds 7"),
        (_replace("images", np.zeros(4)), "'images' has shape [4]"),
        (_replace("fold", np.array(["a", "b", "c", "d"], dtype="S1")), "'fold' has dtype"),
        (_set_attr("schema", "something-else"), "not a naslung crop dataset"),
    ],
)
def test_malformed_dataset_is_a_data_error(dataset: Path, edit, fragment: str) -> None:
    with h5py.File(dataset, "a") as h5:
        edit(h5)
    for reader in (describe_dataset, load_dataset, lambda p: read_rows(p, np.arange(3))):
        with pytest.raises(DataError) as err:
            reader(dataset)
        assert str(err.value).startswith(f"{dataset}: ")
    with pytest.raises(DataError, match=re.escape(fragment)):
        describe_dataset(dataset) if "window" not in fragment else load_dataset(dataset)
    result = CliRunner().invoke(app, ["data", "info", str(dataset)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and str(dataset) in result.output.replace("\n", "")


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95])
def test_truncated_dataset_is_a_data_error(dataset: Path, keep: float) -> None:
    data = dataset.read_bytes()
    dataset.write_bytes(data[: int(len(data) * keep)])
    for reader in (describe_dataset, load_dataset):
        with pytest.raises(DataError, match=re.escape(str(dataset))):
            reader(dataset)


# ---------------------------------------------------------------------------------------------- prepare
def _no_pixels(*_args: object, **_kw: object) -> None:
    raise AssertionError("prepare read pixels before refusing its options")


def test_out_directory_is_refused_before_any_work(tree: Tree, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "read_scan", _no_pixels)
    monkeypatch.setattr(P, "discover_scans", _no_pixels)
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        prepare(tree, tmp_path / "out")
    args = ["data", "prepare", "--luna", str(tree.root), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "is a directory" in one_line(result.output)


def test_huge_margin_is_refused_with_the_estimate(tree: Tree, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "read_scan", _no_pixels)
    monkeypatch.setattr(P, "discover_scans", _no_pixels)
    with pytest.raises(DataError) as err:
        P.prepare_dataset(P.PrepareConfig(tree.root, tmp_path / "o.h5", size=32, margin=200))
    message = str(err.value)
    assert "--margin 200" in message and "432^3" in message and "322.5 MB per nodule" in message
    assert "5.6 GB" in message
    assert not list(tmp_path.glob("*o.h5*"))


def test_dataset_too_big_for_memory_is_refused(tmp_path: Path) -> None:
    config = P.PrepareConfig(tmp_path, tmp_path / "o.h5", size=32, margin=8)
    with pytest.raises(DataError, match=r"the 1011 nodules need about 447\.2 MB to train on, more than the "
                                        r"200\.0 MB available"):
        check_memory(config, n_nodules=1011, available=200_000_000)
    check_memory(config, n_nodules=1011, available=500_000_000)
    with pytest.raises(DataError, match="half of the 10.0 MB available"):
        check_memory(config, n_nodules=1, available=10_000_000)  # one 48^3 crop works in about 7.7 MB


def test_enospc_half_way_keeps_the_old_file_and_names_it(tree: Tree, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "crops.h5"
    prepare(tree, out)
    before = out.read_bytes()
    calls = {"n": 0}
    real = h5py.Dataset.__setitem__

    def disk_full(self: h5py.Dataset, key: object, value: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first scan's crops are written, the second hits a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", disk_full)
    with pytest.raises((OSError, DataError)) as err:
        prepare(tree, out, window=(-1000.0, 400.0))
    assert calls["n"] == 2
    assert str(out) in str(err.value) and "No space left on device" in str(err.value)
    assert ".tmp" not in str(err.value)  # the user's file, not the temporary
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.h5", "luna"]  # no temporary, no lock


CLI = "import sys; from naslung.cli.app import main; sys.argv = ['naslung', *sys.argv[1:]]; main()"
KILLABLE = textwrap.dedent("""
    import sys, time
    import naslung.data.prepare as P
    real, calls = P.read_scan, []

    def slow(path):
        calls.append(path)
        if len(calls) == 2:  # one scan written into the temporary file: stop here until killed
            print("WRITING", flush=True)
            time.sleep(120)
        return real(path)

    P.read_scan = slow
    from naslung.cli.app import main
    sys.argv = ["naslung", *sys.argv[1:]]
    main()
""")


@pytest.mark.slow
def test_kill_9_during_prepare_then_rerun(tree: Tree, tmp_path: Path) -> None:
    out, reference = tmp_path / "crops.h5", tmp_path / "reference.h5"
    prepare(tree, reference, margin=MARGIN + 1)  # what the killed run should have made
    prepare(tree, out)  # an existing dataset, with other settings
    before = out.read_bytes()
    args = ["data", "prepare", "--luna", str(tree.root), "--out", str(out), "--size", str(SIZE),
            "--margin", str(MARGIN + 1), "--json", "--overwrite"]
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "WRITING", proc.stderr
        temporaries = list(tmp_path.glob(".crops.h5.*.tmp"))
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert out.read_bytes() == before  # the killed rerun left the old file byte for byte
    assert lock_path(out).exists() and temporaries[0].exists()  # what a kill leaves behind
    warnings: list[str] = []
    config = P.PrepareConfig(tree.root, out, size=SIZE, margin=MARGIN + 1)
    P.prepare_dataset(config, on_warning=warnings.append)
    assert any("removed 1 temporary file" in w for w in warnings), warnings
    assert_same_dataset(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.h5", "luna", "reference.h5"]


def test_live_writer_lock_is_respected(tree: Tree, tmp_path: Path) -> None:
    out = tmp_path / "crops.h5"
    lock_path(out).write_text(f'{{"pid": {os.getppid()}, "host": "{os.uname().nodename}"}}')
    with pytest.raises(DataError, match=f"being written by pid {os.getppid()}"):
        prepare(tree, out)
    assert not out.exists()


def test_write_dataset_enospc_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "d.h5"
    arrays = {"images": np.zeros((2, 4, 4, 4), np.int16), "labels": np.array([0, 1]),
              "fold": np.array([0, 1]), "seriesuid": np.array(["a", "b"]), "nodule_id": np.array(["0", "0"]),
              "world_center": np.zeros((2, 3)), "diameter_mm": np.ones(2), "malignancy_mean": np.ones(2),
              "malignancy_median": np.ones(2), "ratings": np.zeros((2, 0)), "padded": np.zeros(2, bool)}
    write_dataset(out, arrays, {"window": [-1000, 400]})
    before = out.read_bytes()

    def disk_full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(h5py.Group, "create_dataset", disk_full)
    with pytest.raises((OSError, DataError)) as err:
        write_dataset(out, arrays, {"window": [-1000, 400]})
    assert str(out) in str(err.value) and "No space left on device" in str(err.value)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["d.h5"]


# ---------------------------------------------------------------------------------------------- orphans
def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.slow
def test_phantom_workers_die_with_their_parent(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "data", "phantom", "--out", str(tmp_path / "ph"),
         "--limit", "10", "--workers", "2", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "NASLUNG_CACHE": str(tmp_path / "cache")})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p in _children(proc.pid) if b"spawn_main" in _cmdline(p)]
            if len(workers) >= 2:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the build never started its 2 workers"
        others = [p for p in _children(proc.pid) if p not in workers]  # the resource tracker
        time.sleep(0.5)  # let the initializers run
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in workers + others):
            time.sleep(0.1)
        assert not [p for p in workers + others if _alive(p)], "workers outlived their parent"
    finally:
        proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
