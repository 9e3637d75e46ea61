"""The enumerated search space of eq. 5-6."""

from __future__ import annotations

import math

import pytest

from naslung.models.spec import MODEL_1, ArchSpec, space_violations
from naslung.search.space import SearchSpace, paper_space, parse_channels, stage_depth_splits


def _expected_size(n_channels: int, lo: int, hi: int) -> int:
    # non-decreasing width sequences of length n (multisets) x admissible (L, M, N) splits
    return sum(math.comb(n + n_channels - 1, n) * len(stage_depth_splits(n)) for n in range(lo, hi + 1))


def test_paper_space_has_42426_architectures() -> None:
    space = paper_space()
    assert len(space) == 42_426 == _expected_size(6, 3, 9)


def test_every_enumerated_spec_satisfies_space_violations() -> None:
    space = paper_space()
    specs = list(space)
    assert all(not space_violations(s) for s in specs)
    assert len(set(specs)) == len(specs)


def test_stage_depth_splits_follow_eq5() -> None:
    for n in range(3, 10):
        for split in stage_depth_splits(n):
            assert sum(split) == n
            assert all(max(1, n // 4) <= d <= math.ceil(n / 2) for d in split)
    assert stage_depth_splits(3) == [(1, 1, 1)]
    assert len(stage_depth_splits(9)) == 10


def test_index_round_trip_and_determinism(small_space: SearchSpace) -> None:
    again = SearchSpace(channels=small_space.channels, depth_range=small_space.depth_range)
    assert (again.ranks == small_space.ranks).all()
    for i in range(0, len(small_space), 37):
        assert small_space.index(small_space[i]) == i
        assert small_space.index(str(small_space[i])) == i
    assert paper_space().index(MODEL_1) >= 0
    assert MODEL_1 in paper_space()


@pytest.mark.parametrize(
    "channels, depth", [((4, 8, 16), (3, 5)), ((4, 16, 64), (4, 7)), ((8, 4, 32), (3, 3))]
)
def test_configurable_space(channels: tuple[int, ...], depth: tuple[int, int]) -> None:
    space = SearchSpace(channels=channels, depth_range=depth)
    assert len(space) == _expected_size(len(channels), *depth)
    assert all(not space_violations(s, channels=channels, depth_range=depth) for s in space)


def test_outside_specs_are_rejected(small_space: SearchSpace) -> None:
    for text in (
        "[4,4,[64],[64],[64]]",
        "[4,4,[8,4],[8],[8]]",
        "[4,8,[8],[8],[8]]",
        "[4,4,[4,4,4,4],[4],[4]]",
    ):
        spec = ArchSpec.parse(text)
        assert spec not in small_space
        with pytest.raises(ValueError, match="not in the search space"):
            small_space.index(spec)


def test_bad_space_arguments() -> None:
    with pytest.raises(ValueError, match="depth range"):
        SearchSpace(depth_range=(2, 5))
    with pytest.raises(ValueError, match="stem width"):
        SearchSpace(channels=(1, 2))
    assert parse_channels("16, 4,8") == (4, 8, 16)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_channels("4,x")
