"""Regression tests of the bundled models in the package: each built one loads, its checksums match its card,
and it predicts a fixed synthetic crop as recorded in tests/zoo/bundled_expected.json, within 1e-5, on torch
and on ONNX Runtime. A rebuild (new weights) or a change of the serving path fails here.

Regenerate the stored values after a deliberate rebuild (`naslung models build`) with
``PYTHONPATH=src python tests/zoo/test_bundled.py --write``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from naslung.zoo.registry import MODELS_ENV, RECIPES, is_built, models_root

EXPECTED = Path(__file__).with_name("bundled_expected.json")
TOLERANCE = 1e-5
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
RUNTIMES = ("torch", "onnx") if HAS_ONNX else ("torch",)


def sample_crop(dims: int, size: int) -> torch.Tensor:
    """A fixed ``(1, 1, *[size] * dims)`` model input in [0, 1]: a bright ball of radius 0.22 * size on a
    dim, textured background (closed form, no RNG), the kind of crop `naslung data prepare` cuts."""
    grid = np.indices([size] * dims, dtype=np.float64)
    centre = (size - 1) / 2
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    texture = 0.05 * np.sin(0.7 * grid[0]) * np.cos(0.45 * grid[-1])
    image = np.clip(0.1 + 0.55 * (r <= 0.22 * size) + texture, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(image)[None, None]


def predict(name: str, runtime: str) -> dict[str, float]:
    """``{member label: p(malignant)}`` of bundled model ``name`` on :func:`sample_crop`."""
    from naslung.serving.bundled import load_bundled
    from naslung.serving.predict import member_runner

    members = load_bundled(name)
    crop = members[0].crop
    x = sample_crop(crop.dims, crop.size)
    out = {}
    with torch.no_grad():
        for m in members:
            out[m.name] = float(torch.softmax(member_runner(m, runtime)(x).double(), dim=1)[0, 1])
    return out


def built_models() -> list[str]:
    return [name for name in RECIPES if is_built(name)]


@pytest.fixture(autouse=True)
def _package_models(monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)


def test_the_stored_values_cover_every_built_model():
    stored = json.loads(EXPECTED.read_text(encoding="utf-8"))["models"]
    assert sorted(stored) == sorted(built_models()), \
        f"{EXPECTED.name} is stale: PYTHONPATH=src python tests/zoo/test_bundled.py --write"
    assert {"voi3d-default", "voi2d-default"} <= set(stored)


@pytest.mark.parametrize("name", list(RECIPES))
def test_checksums_match_the_card(name: str):
    from naslung.zoo.card import bundle_sha256
    from naslung.zoo.registry import checked_weights, read_card

    if not is_built(name):
        pytest.skip(f"{name} is not built")
    card = read_card(name)
    assert card["name"] == name and card["members"]
    for m in card["members"]:
        checked_weights(name, m)  # raises when the file's sha256 differs from the card's
    assert bundle_sha256(card["members"]) == card["sha256"]
    stored = json.loads(EXPECTED.read_text(encoding="utf-8"))["models"][name]
    assert stored["sha256"] == card["sha256"], \
        f"{name} was rebuilt: check it, then PYTHONPATH=src python tests/zoo/test_bundled.py --write"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(RECIPES))
def test_predicts_the_stored_value(name: str, runtime: str):
    if not is_built(name):
        pytest.skip(f"{name} is not built")
    stored = json.loads(EXPECTED.read_text(encoding="utf-8"))["models"][name]["members"]
    got = predict(name, runtime)
    assert list(got) == list(stored)
    for member, p in got.items():
        assert abs(p - stored[member]) <= TOLERANCE, (member, runtime, p, stored[member])


def _write() -> None:
    from naslung.zoo.registry import read_card

    models = {}
    for name in built_models():
        members = predict(name, "torch")
        models[name] = {"sha256": read_card(name)["sha256"],
                        "members": {k: round(v, 8) for k, v in members.items()}}
    doc = {"comment": "p(malignant) of each bundled model's members on tests/zoo/test_bundled.py's "
                      "sample_crop (torch path). Regenerate after a deliberate rebuild: PYTHONPATH=src "
                      "python tests/zoo/test_bundled.py --write",
           "models_root": "naslung/resources/models", "models": models}
    EXPECTED.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"{EXPECTED}: {len(models)} models from {models_root()}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    _write()
