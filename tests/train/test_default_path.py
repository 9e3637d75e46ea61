"""The default training path runs hundreds of steps in 2-D and 3-D without crashing (AVX2 regression).

torch 2.13.0+cpu corrupted the heap on AVX2-only CPUs in 2-D channels-last training (see
``naslung.train.engine.channels_last_applies``). Each check runs in a subprocess, so a crash fails this test
instead of killing the whole pytest process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import torch
    from naslung.train.config import TrainConfig
    from naslung.train.engine import fit
    from conftest import synthetic_dataset

    dims = {dims}
    ds = synthetic_dataset(n=128, dims=dims, size=16, margin=2, folds=4, seed=3)
    # ~90 training rows / batch 4 -> 23 steps per epoch; {epochs} epochs on the default path.
    config = TrainConfig(arch="[4,4,[4],[8],[8]]", epochs={epochs}, batch_size=4, device="cpu", num_threads=1)
    assert config.channels_last  # the default
    result = fit(ds, config, test_fold=0)
    assert result.model is not None
    print("steps", {epochs} * -(-result.split["train"] // 4))
""")


@pytest.mark.parametrize("dims,epochs", [(2, 12), (3, 10)])
@pytest.mark.slow
def test_default_training_path_runs_hundreds_of_steps(dims, epochs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(dims=dims, epochs=epochs)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    steps = int(proc.stdout.split("steps")[-1])
    assert steps >= 200, steps
