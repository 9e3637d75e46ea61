"""The tiny LUNA16 tree of the predict tests, for the bundled-model prediction test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def luna(tmp_path_factory: pytest.TempPathFactory, helpers):
    """``(tree, None)``: the synthetic LUNA16 tree."""
    tree = helpers.luna_synth().make_tree(tmp_path_factory.mktemp("zoo_luna") / "luna")
    return tree, None
