"""POP's partial order: greedy check vs brute force, order axioms, and the vectorised query."""

from __future__ import annotations

from itertools import combinations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from naslung.models.spec import ArchSpec
from naslung.search.order import above_mask, below_mask, precedes, stage_embeds
from naslung.search.space import SearchSpace, paper_space


def brute_embeds(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Some order-preserving injection j with a[i] <= b[j(i)] (tries all of them)."""
    return any(
        all(x <= b[j] for x, j in zip(a, js, strict=True)) for js in combinations(range(len(b)), len(a))
    )


def brute_precedes(a: ArchSpec, b: ArchSpec) -> bool:
    return a.stem == b.stem and all(brute_embeds(x, y) for x, y in zip(a.stages, b.stages, strict=True))


seqs = st.lists(st.integers(1, 6), max_size=6).map(tuple)


@given(seqs, seqs)
@settings(max_examples=400, deadline=None)
def test_greedy_embedding_equals_brute_force_on_any_sequences(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    assert stage_embeds(a, b) == brute_embeds(a, b)


PAPER = paper_space()
index = st.integers(0, len(PAPER) - 1)


@st.composite
def shrink(draw: st.DrawFn, spec: ArchSpec) -> ArchSpec:
    """Delete blocks (keeping one per stage) and narrow widths, keeping each stage sorted."""
    stages = []
    for stage in spec.stages:
        keep = sorted(draw(st.sets(st.integers(0, len(stage) - 1), min_size=1, max_size=len(stage))))
        widths = [draw(st.sampled_from([c for c in (4, 8, 16, 32, 64, 128) if c <= stage[k]])) for k in keep]
        stages.append(tuple(sorted(widths)))
    return ArchSpec(stem=spec.stem, stages=tuple(stages))  # type: ignore[arg-type]


@given(index)
def test_reflexive(i: int) -> None:
    assert precedes(PAPER[i], PAPER[i])
    assert below_mask(PAPER.order_keys(), i)[i]


@given(index, index)
@settings(max_examples=300)
def test_antisymmetric_and_equal_to_brute_force(i: int, j: int) -> None:
    a, b = PAPER[i], PAPER[j]
    assert precedes(a, b) == brute_precedes(a, b)
    if precedes(a, b) and precedes(b, a):
        assert a == b


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_transitive_on_chains(data: st.DataObject) -> None:
    c = PAPER[data.draw(index)]
    b = data.draw(shrink(c))
    a = data.draw(shrink(b))
    assert precedes(b, c) and precedes(a, b)
    assert precedes(a, c) and brute_precedes(a, c)


@given(index, index)
@settings(max_examples=100, deadline=None)
def test_vectorised_query_matches_pairwise(i: int, j: int) -> None:
    keys = PAPER.order_keys()
    assert below_mask(keys, j)[i] == precedes(PAPER[i], PAPER[j]) == above_mask(keys, i)[j]


def test_relation_matrix_exhaustive_on_a_tiny_space() -> None:
    space = SearchSpace(channels=(4, 8, 16), depth_range=(3, 4))
    specs = list(space)
    keys = space.order_keys()
    brute = np.array([[brute_precedes(a, b) for b in specs] for a in specs])
    vector = np.stack([below_mask(keys, j) for j in range(len(space))], axis=1)  # [a, b]: a <= b
    assert (brute == vector).all()
    assert brute.diagonal().all()
    assert not (brute & brute.T & ~np.eye(len(specs), dtype=bool)).any()  # antisymmetric
    composed = (brute.astype(int) @ brute.astype(int)) > 0
    assert not (composed & ~brute).any()  # transitive


def test_examples_from_the_definition() -> None:
    p = ArchSpec.parse
    assert precedes(p("[4,4,[4],[4],[8]]"), p("[4,4,[4,4],[4,8],[8,8]]"))
    assert precedes(p("[4,4,[4,4],[4,4],[4,8]]"), p("[4,4,[4,4],[4,8],[8,8]]"))
    assert not precedes(p("[4,4,[8],[8],[8]]"), p("[4,4,[4,4],[4,8],[8,8]]"))  # stage 3 cannot widen
    assert not precedes(p("[4,4,[4,4,4],[8],[8]]"), p("[4,4,[4,4],[4,8],[8,8]]"))  # stage 3 cannot deepen
