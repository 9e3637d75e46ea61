"""The POP search space of eq. 5-6, enumerated once into compact numpy arrays.

Every architecture ``[4,4,[C3...],[C4...],[C5...]]`` in the space has widths from the channel set, widths
non-decreasing along the whole network (stem included), total depth ``n = L+M+N`` in the depth range, every
stage holding at least one block, and ``floor(n/4) <= L,M,N <= ceil(n/2)`` (eq. 5). With the paper's channels
{4..128} and depths 3-9 that is exactly 42,426 architectures, the same rule as
:func:`naslung.models.spec.space_violations`.

Storage: ``ranks`` is ``(S, 3, K)`` uint8 holding the *rank* (1-based position in the channel set) of each
block width, right-aligned within its stage and left-padded with 0, where ``K = ceil(max_depth / 2)`` is the
deepest a stage can be. Right alignment makes the partial order a single element-wise comparison (see
:mod:`naslung.search.order`). The enumeration order is deterministic: by total depth, then stage depths
``(L, M, N)`` lexicographically, then width sequences lexicographically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from typing import Any

import numpy as np

from naslung.models.spec import PAPER_CHANNELS, PAPER_DEPTH, ArchSpec, coerce_spec


def stage_depth_splits(n: int) -> list[tuple[int, int, int]]:
    """All ``(L, M, N)`` with ``L+M+N = n``, each >= 1 and in ``[floor(n/4), ceil(n/2)]`` (eq. 5)."""
    lo, hi = max(1, math.floor(n / 4)), math.ceil(n / 2)
    return [(a, b, n - a - b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if lo <= n - a - b <= hi]


@dataclass
class SearchSpace:
    """Enumerated search space; ``space[i]`` is the i-th :class:`ArchSpec`, ``space.index(spec)`` its inverse.

    Args:
        channels: allowed block widths (eq. 6); widths below the stem width can never follow the stem in a
            non-decreasing network and are dropped.
        depth_range: inclusive range of ``L+M+N``.
        stem: the fixed widths of stages 1-2.
    """

    channels: tuple[int, ...] = PAPER_CHANNELS
    depth_range: tuple[int, int] = PAPER_DEPTH
    stem: tuple[int, int] = (4, 4)
    ranks: np.ndarray = field(init=False, repr=False)
    depths: np.ndarray = field(init=False, repr=False)
    _lookup: dict[bytes, int] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.channels = tuple(sorted({int(c) for c in self.channels if int(c) >= self.stem[1]}))
        self.depth_range = (int(self.depth_range[0]), int(self.depth_range[1]))
        self.stem = (int(self.stem[0]), int(self.stem[1]))
        lo, hi = self.depth_range
        if not self.channels:
            raise ValueError(f"no channel width >= the stem width {self.stem[1]}")
        if self.stem[0] > self.stem[1]:
            raise ValueError(f"stem {list(self.stem)} decreases")
        if lo < 3 or hi < lo:
            raise ValueError(
                f"depth range {self.depth_range} must satisfy 3 <= lo <= hi (one block per stage)"
            )
        if len(self.channels) > 255:
            raise ValueError("at most 255 channel widths are supported")
        k = self.max_stage_depth
        blocks_r: list[np.ndarray] = []
        blocks_d: list[np.ndarray] = []
        for n in range(lo, hi + 1):
            seqs = np.array(
                list(combinations_with_replacement(range(1, len(self.channels) + 1), n)), dtype=np.uint8
            )
            for split in stage_depth_splits(n):
                r = np.zeros((len(seqs), 3, k), dtype=np.uint8)
                start = 0
                for s, d in enumerate(split):
                    r[:, s, k - d :] = seqs[:, start : start + d]
                    start += d
                blocks_r.append(r)
                blocks_d.append(np.tile(np.array(split, dtype=np.int8), (len(seqs), 1)))
        self.ranks = np.concatenate(blocks_r)
        self.depths = np.concatenate(blocks_d)
        self.ranks.setflags(write=False)
        self.depths.setflags(write=False)

    # ------------------------------------------------------------------ basics
    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SearchSpace:
        return cls(
            channels=tuple(cfg["channels"]), depth_range=tuple(cfg["depth_range"]), stem=tuple(cfg["stem"])
        )

    def config(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "depth_range": list(self.depth_range),
            "stem": list(self.stem),
            "size": len(self),
        }

    @property
    def max_stage_depth(self) -> int:
        return math.ceil(self.depth_range[1] / 2)

    def __len__(self) -> int:
        return int(self.ranks.shape[0])

    def __getitem__(self, i: int) -> ArchSpec:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} outside a space of {len(self)} architectures")
        ch = self.channels
        stages = tuple(tuple(ch[r - 1] for r in row if r) for row in self.ranks[i])
        return ArchSpec(stem=self.stem, stages=stages)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[ArchSpec]:
        return (self[i] for i in range(len(self)))

    def __contains__(self, spec: object) -> bool:
        try:
            self.index(spec)  # type: ignore[arg-type]
        except (ValueError, KeyError):
            return False
        return True

    def index(self, spec: ArchSpec | str | dict[str, Any]) -> int:
        """Position of ``spec`` in the enumeration; ``ValueError`` when it is outside the space."""
        spec = coerce_spec(spec)
        if self._lookup is None:
            self._lookup = {row.tobytes(): i for i, row in enumerate(self.ranks.reshape(len(self), -1))}
        key = self._key(spec)
        if key is None or key not in self._lookup:
            raise ValueError(
                f"{spec} is not in the search space (channels {list(self.channels)}, "
                f"depth {self.depth_range[0]}-{self.depth_range[1]}, stem {list(self.stem)})"
            )
        return self._lookup[key]

    def _key(self, spec: ArchSpec) -> bytes | None:
        if spec.stem != self.stem:
            return None
        rank = {c: r + 1 for r, c in enumerate(self.channels)}
        k = self.max_stage_depth
        row = np.zeros((3, k), dtype=np.uint8)
        for s, widths in enumerate(spec.stages):
            if len(widths) > k or any(c not in rank for c in widths):
                return None
            row[s, k - len(widths) :] = [rank[c] for c in widths]
        return row.tobytes()

    def widths(self) -> np.ndarray:
        """``(S, 3, K)`` block widths in channels, right-aligned per stage, 0 where a stage has no block."""
        lut = np.array((0, *self.channels), dtype=np.int64)
        return lut[self.ranks]

    def order_keys(self) -> np.ndarray:
        """``(S, 3*K)`` uint8 rows compared element-wise by :func:`naslung.search.order.below_mask`."""
        return self.ranks.reshape(len(self), -1)


def paper_space() -> SearchSpace:
    """The paper's space: channels {4,8,16,32,64,128}, depth 3-9 (42,426 architectures)."""
    return SearchSpace()


def parse_channels(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"4,8,16"`` or a sequence -> sorted tuple of ints."""
    if isinstance(text, str):
        try:
            return tuple(sorted(int(t) for t in text.replace(" ", "").split(",") if t))
        except ValueError:
            raise ValueError(f"channel list {text!r} must be comma-separated integers") from None
    return tuple(sorted(int(c) for c in text))
