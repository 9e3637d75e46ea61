"""What fit() reports: progress events of a tiny run, and the provenance in its config.json."""

from __future__ import annotations

import json

import torch

from naslung.progress import RecordingProgress
from naslung.provenance import invoked_as
from naslung.train.engine import BATCHES_TASK, fit, steps_per_epoch

from .conftest import TINY, tiny


def test_progress_receives_epochs_and_batches(separable, tmp_path):
    rec = RecordingProgress()
    result = fit(separable, tiny(epochs=2), test_fold=0, out_dir=tmp_path / "run", progress=rec)
    steps = steps_per_epoch(result.split["train"], 16)
    label = f"{TINY} fold 0"
    epoch_events = [e for e in rec.events if e[1] == label]
    assert epoch_events[0] == ("start", label, 2) and epoch_events[-1] == ("finish", label)
    advances = [e for e in epoch_events if e[0] == "advance"]
    assert [a[2] for a in advances] == [1, 1]
    assert set(advances[0][3]) == {"loss", "val_acc", "val_f1"}
    assert advances[-1][3]["loss"] == result.history[-1]["train_loss"]
    batch_events = [e for e in rec.events if e[1] == BATCHES_TASK]
    one_epoch = [("start", BATCHES_TASK, steps), *[("advance", BATCHES_TASK, 1, {})] * steps,
                 ("finish", BATCHES_TASK)]
    assert batch_events == one_epoch * 2
    # every task that started has finished, and the epoch task outlives the batches
    assert rec.events[0] == ("start", label, 2) and rec.events[-1] == ("finish", label)

    again = RecordingProgress()  # a finished run is read back: nothing trains, nothing is reported
    fit(separable, tiny(epochs=2), test_fold=0, out_dir=tmp_path / "run", resume=True, progress=again)
    assert again.events == []


def test_config_records_provenance_and_the_command(separable, tmp_path):
    with invoked_as("naslung train --fold 0"):
        fit(separable, tiny(epochs=1), test_fold=0, out_dir=tmp_path / "a")
    fit(separable, tiny(epochs=1), test_fold=0, out_dir=tmp_path / "b")
    prov = json.loads((tmp_path / "a" / "config.json").read_text())["provenance"]
    assert prov["command"] == "naslung train --fold 0" and prov["torch"] == torch.__version__
    assert {"naslung", "python", "numpy", "date", "device", "threads"} <= set(prov)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["provenance"]["command"] is None
