"""Options checked where they are parsed: each bad value gives exit 2 and one line naming the option.

Built from a table; every case also asserts that the files present before the command are byte-identical
after it (nothing trained, nothing written).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from naslung.models.cost import analytic_cost, check_memory, memory_estimate
from naslung.options import SEED_MAX, check_seed
from naslung.train.config import TrainConfig

from .runtime_support import SEARCH_FAST, TRAIN_FAST, cli, error_line, write_tiny

HUGE = "99999999999999999999"
SPEC = "[4,4,[4],[4],[4]]"
BIG = "[4,4,[16384],[16384],[16384]]"  # about 37 G parameters: never fits
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="probes a machine without CUDA")


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    data = write_tiny(root / "d.h5")
    flat = root / "flat.h5"  # the same crops as 2-D slices
    shutil.copy(data, flat)
    with h5py.File(flat, "a") as h5:
        images = h5["images"][()][:, 5]
        del h5["images"]
        h5["images"] = images
        h5.attrs["spatial_dims"] = 2
    run = root / "run"
    trained = cli("train", "--data", data, "--fold", 1, "--out", run, *TRAIN_FAST, "--epochs", "1")
    assert trained.exit_code == 0, trained.output
    return {"root": root, "DATA": data, "FLAT": flat, "RUN": run}


TRAIN = ["train", "--data", "DATA", "--fold", "1", "--out", "TMP/r", *TRAIN_FAST]
CV = ["cv", "--data", "DATA", "--folds", "1", "--out", "TMP/cv", *TRAIN_FAST]
SEARCH = ["search", "--data", "DATA", "--out", "TMP/s", *SEARCH_FAST]
#: (id, command line, fragments the one error line must hold)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("arch-threads-0", ["arch", "info", SPEC, "--threads", "0"], ("--threads", "positive")),
    ("arch-device-tpu", ["arch", "info", SPEC, "--device", "tpu"], ("--device", "'tpu'", "cpu, cuda")),
    ("arch-repeats-0", ["arch", "info", SPEC, "--repeats", "0"], ("--repeats",)),
    ("train-seed-huge", [*TRAIN, "--seed", HUGE], ("--seed", str(SEED_MAX))),
    ("train-split-seed-negative", [*TRAIN, "--split-seed", "-1"], ("--split-seed",)),
    ("cv-seed-huge", [*CV, "--seed", HUGE], ("--seed",)),
    ("search-seed-huge", [*SEARCH, "--seed", HUGE], ("--seed",)),
    ("explain-seed-huge", ["explain", "RUN", "--data", "DATA", "--fold", "1", "--out", "TMP/e",
                           "--seed", HUGE], ("--seed",)),
    ("ensemble-size-seed-huge", ["ensemble-size", "--runs", "RUN", "--fold", "1", "--plot", "TMP/p.png",
                                 "--seed", HUGE], ("--seed",)),
    ("preview-seed-huge", ["data", "preview", "DATA", "--out", "TMP/p.png", "--seed", HUGE], ("--seed",)),
    ("phantom-seed-huge", ["data", "phantom", "--out", "TMP/ph", "--seed", HUGE], ("--seed",)),
    ("report-seed-huge", ["report", "RUN", "--out", "TMP/r.html", "--seed", HUGE], ("--seed",)),
    ("reproduce-seed-huge", ["reproduce", "--data", "DATA", "--out", "TMP/rp", "--seed", HUGE], ("--seed",)),
    ("demo-seed-huge", ["demo", "--out", "TMP/demo", "--seed", HUGE], ("--seed",)),
    ("set-seed-huge", [*TRAIN, "--set", f"seed={HUGE}"], ("--set", "seed")),
    ("set-tta-maybe", [*TRAIN, "--set", "tta=maybe"], ("--set", "tta", "true or false")),
    ("set-int-float", [*TRAIN, "--set", "eval_batch_size=2.5"], ("--set", "eval_batch_size", "whole number")),
    ("set-float-string", [*TRAIN, "--set", "weight_decay=fast"], ("--set", "weight_decay", "a number")),
    ("set-beats-option", [*TRAIN, "--set", "epochs=3"], ("--set", "--epochs", "conflicts")),
    ("set-beats-threads", [*TRAIN, "--set", "num_threads=4"], ("--set", "--threads", "conflicts")),
    ("config-is-result", [*TRAIN, "--config", "RUN/result.json"], ("--config", "training result")),
    ("config-is-dataset", [*TRAIN, "--config", "DATA"], ("--config",)),
    ("max-shift-beyond-margin", [*TRAIN, "--max-shift", "5"], ("--max-shift", "margin 1")),
    ("set-max-shift-beyond-margin", [*TRAIN, "--set", "max_shift=3"], ("--max-shift", "margin 1")),
    ("cv-max-shift-beyond-margin", [*CV, "--max-shift", "2"], ("--max-shift", "margin 1")),
    ("channels-last-2d", ["train", "--data", "FLAT", "--fold", "1", "--out", "TMP/r", *TRAIN_FAST,
                          "--channels-last"], ("--channels-last", "3-D")),
    ("set-channels-last-2d", ["cv", "--data", "FLAT", "--folds", "1", "--out", "TMP/cv", *TRAIN_FAST,
                              "--set", "channels_last=true"], ("--channels-last",)),
    ("train-arch-too-large", [*TRAIN, "--arch", BIG], ("--arch", "of memory", "available")),
    ("cv-arch-too-large", [*CV, "--arch", BIG], ("--arch", "of memory")),
    ("arch-info-too-large", ["arch", "info", BIG, "--size", "8"], (BIG, "of memory", "available")),
    ("latency-budget-nothing-fits", [*SEARCH, "--max-latency-ms", "1e-6"],
     ("--max-latency-ms", "no architecture")),
    ("latency-budget-former-name", [*SEARCH, "--latency-budget-ms", "1e-6"],  # the hidden former name
     ("--max-latency-ms", "no architecture")),
]
CUDA_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("arch-device-cuda", ["arch", "info", SPEC, "--device", "cuda"], ("--device", "CUDA")),
    ("search-gpus-per-trial", [*SEARCH, "--gpus-per-trial", "1"], ("--gpus-per-trial", "CUDA")),
]
PARAMS = [pytest.param(args, fragments, id=name) for name, args, fragments in CASES] + [
    pytest.param(args, fragments, id=name, marks=no_cuda) for name, args, fragments in CUDA_CASES]


@pytest.mark.parametrize(("args", "fragments"), PARAMS)
def test_bad_option(world: dict[str, Path], tmp_path: Path, args: list[str],
                    fragments: tuple[str, ...]) -> None:
    argv = []
    for arg in args:
        for key in ("DATA", "FLAT", "RUN"):
            arg = arg.replace(key, str(world[key])) if arg.startswith(key) else arg
        argv.append(arg.replace("TMP", str(tmp_path)))
    before = snapshot(world["root"])
    line = error_line(cli(*argv))
    for fragment in fragments:
        assert fragment in line, line
    assert snapshot(world["root"]) == before
    assert not any(p.suffix == ".pt" for p in tmp_path.rglob("*")), sorted(tmp_path.rglob("*"))


def test_same_value_in_set_and_option_is_no_conflict(world: dict[str, Path], tmp_path: Path) -> None:
    result = cli("train", "--data", world["DATA"], "--fold", "1", "--out", tmp_path / "r", *TRAIN_FAST,
                 "--epochs", "1", "--set", "epochs=1", "--max-shift", "1", "--json")
    assert result.exit_code == 0, result.output


# ---- the checks themselves -----------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "fragment"), [
    ({"tta": "maybe"}, "tta must be true or false"),
    ({"augment": 1}, "augment must be true or false"),
    ({"epochs": 2.0}, "epochs must be a whole number"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"lr": "1e-3"}, "lr must be a number"),
    ({"ema_decay": "0.9"}, "ema_decay must be a number or null"),
    ({"loss": 3}, "loss must be a string"),
    ({"seed": -1}, "seed must be a whole number in 0.."),
    ({"split_seed": SEED_MAX + 1}, "split_seed must be a whole number in 0.."),
], ids=lambda v: str(v))
def test_train_config_types(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(**fields)  # type: ignore[arg-type]


def test_seed_range() -> None:
    assert check_seed("--seed", 0) == 0 and check_seed("--seed", SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 1.0, True, "3"):
        with pytest.raises(ValueError, match="--seed"):
            check_seed("--seed", bad)


def test_memory_estimate_refuses_only_above_what_is_available() -> None:
    cost = analytic_cost(SPEC, size=8)
    need = memory_estimate(cost, 16, 128)
    check_memory(cost, SPEC, 16, 128, available=need)
    with pytest.raises(ValueError, match=r"training it needs about .* more than the"):
        check_memory(cost, SPEC, 16, 128, available=need - 1)
    assert memory_estimate(cost, 32) > memory_estimate(cost, 16) > memory_estimate(cost, 16, train=False)
