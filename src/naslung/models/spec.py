"""Architecture specification in the paper's notation ``[4,4,[C3...],[C4...],[C5...]]``.

An :class:`ArchSpec` is the contract between the model factory, the search, checkpoints, trial
records and reports (eq. 7 of the paper, prefixed with the two stem widths of stages 1-2).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Channel set of eq. 6.
PAPER_CHANNELS: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
#: Total residual depth range of eq. 6 (3 <= L+M+N <= 9).
PAPER_DEPTH: tuple[int, int] = (3, 9)

_TOKEN = re.compile(r"\s*(\[|\]|,|[^\[\],\s]+)")
# A width is ASCII digits only: int() would also take "1_0", "+4" and non-ASCII digits ("٤").
_WIDTH = re.compile(r"[0-9]+")
#: Deepest list nesting the notation has (the outer list holds the stage lists); deeper input is refused
#: before it can recurse (a 2,000-deep spec must not raise RecursionError).
_MAX_DEPTH = 2


@dataclass(frozen=True)
class ArchSpec:
    """A NAS-Lung architecture.

    Attributes:
        stem: output widths of the two stem convolutions (stages 1-2).
        stages: residual-block widths of stages 3, 4 and 5 (``L``, ``M``, ``N`` blocks).
    """

    stem: tuple[int, int]
    stages: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    def __post_init__(self) -> None:
        stem = tuple(int(c) for c in self.stem)
        stages = tuple(tuple(int(c) for c in stage) for stage in self.stages)
        if len(stem) != 2:
            raise ValueError(f"an architecture needs exactly 2 stem widths, got {len(stem)}: {stem}")
        if len(stages) != 3:
            raise ValueError(f"an architecture needs exactly 3 residual stages, got {len(stages)}")
        for name, widths in (("stem", stem), *((f"stage {i + 3}", s) for i, s in enumerate(stages))):
            if name != "stem" and len(widths) == 0:
                raise ValueError(f"{name} has no residual block; every stage needs at least one")
            for c in widths:
                if c < 1:
                    raise ValueError(f"{name} has a non-positive channel width {c}")
        object.__setattr__(self, "stem", stem)
        object.__setattr__(self, "stages", stages)

    # ------------------------------------------------------------------ notation
    @classmethod
    def parse(cls, text: str) -> ArchSpec:
        """Parse ``"[4,4,[4,4],[4,8],[8,8]]"``; the stem-less form ``"[[4,4],[4,8],[8,8]]"`` (eq. 7) gets
        the paper's 4-channel stem. Raises ``ValueError`` naming the offending token."""
        if not isinstance(text, str):
            raise ValueError(f"architecture must be a string, got {type(text).__name__}")
        tokens = _tokenize(text)
        value, pos = _parse_list(tokens, 0, text)
        if pos != len(tokens):
            raise ValueError(f"unexpected token {tokens[pos]!r} after the end of architecture {text!r}")
        ints = [v for v in value if isinstance(v, int)]
        lists = [v for v in value if isinstance(v, list)]
        if any(isinstance(v, list) and any(isinstance(w, list) for w in v) for v in value):
            raise ValueError(f"architecture {text!r} nests lists deeper than one level")
        if value[: len(ints)] != ints:
            raise ValueError(f"stem widths must come before the stage lists in {text!r}")
        if len(ints) == 0:
            ints = [4, 4]
        if len(ints) != 2:
            raise ValueError(f"architecture {text!r} needs 2 stem widths, found {len(ints)}")
        if len(lists) != 3:
            raise ValueError(f"architecture {text!r} needs 3 stage lists, found {len(lists)}")
        return cls(stem=(ints[0], ints[1]), stages=(tuple(lists[0]), tuple(lists[1]), tuple(lists[2])))

    def __str__(self) -> str:
        stages = ",".join("[" + ",".join(str(c) for c in s) + "]" for s in self.stages)
        return f"[{self.stem[0]},{self.stem[1]},{stages}]"

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"stem": list(self.stem), "stages": [list(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        try:
            return cls(stem=tuple(data["stem"]), stages=tuple(tuple(s) for s in data["stages"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an architecture record: {data!r} ({exc})") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError(f"architecture JSON {_short(str(text))} is nested too deeply") from None
        if isinstance(data, str):
            return cls.parse(data)
        return cls.from_dict(data)

    # ------------------------------------------------------------------ properties
    @property
    def depths(self) -> tuple[int, int, int]:
        """``(L, M, N)``: residual blocks per stage."""
        return (len(self.stages[0]), len(self.stages[1]), len(self.stages[2]))

    @property
    def depth(self) -> int:
        return sum(self.depths)

    @property
    def block_widths(self) -> tuple[int, ...]:
        """All residual-block widths in network order."""
        return tuple(c for s in self.stages for c in s)

    @property
    def out_channels(self) -> int:
        """Width of the embedding fed to the head."""
        return self.stages[2][-1]


def coerce_spec(spec: ArchSpec | str | dict[str, Any]) -> ArchSpec:
    """Accept an :class:`ArchSpec`, its notation string, or its JSON dict."""
    if isinstance(spec, ArchSpec):
        return spec
    if isinstance(spec, str):
        return ArchSpec.parse(spec)
    if isinstance(spec, dict):
        return ArchSpec.from_dict(spec)
    raise ValueError(f"cannot interpret {spec!r} as an architecture")


def space_violations(
    spec: ArchSpec,
    channels: Sequence[int] = PAPER_CHANNELS,
    depth_range: tuple[int, int] = PAPER_DEPTH,
    stem: tuple[int, int] = (4, 4),
) -> list[str]:
    """Reasons why ``spec`` lies outside the search space of eq. 5-6 (empty list: inside).

    Choices where the paper is terse: widths are non-decreasing along the whole network (stem included),
    which gives the 42,426 architectures the design brief quotes; the stem is fixed at 4,4 (section 3.1);
    every stage holds at least one block, since each stage halves the resolution.
    """
    reasons: list[str] = []
    allowed = set(channels)
    if spec.stem != tuple(stem):
        reasons.append(f"stem {list(spec.stem)} is not the fixed stem {list(stem)}")
    bad = sorted({c for c in spec.block_widths if c not in allowed})
    if bad:
        reasons.append(f"widths {bad} are not in the channel set {sorted(allowed)}")
    widths = (*spec.stem, *spec.block_widths)
    if any(b < a for a, b in zip(widths, widths[1:], strict=False)):
        reasons.append(f"widths {list(widths)} decrease along the network")
    n = spec.depth
    lo, hi = depth_range
    if not lo <= n <= hi:
        reasons.append(f"depth L+M+N={n} is outside [{lo}, {hi}]")
    dmin, dmax = math.floor(n / 4), math.ceil(n / 2)
    for name, d in zip("LMN", spec.depths, strict=True):
        if not dmin <= d <= dmax:
            reasons.append(
                f"{name}={d} breaks the stage balance floor(n/4)={dmin} <= {name} <= ceil(n/2)={dmax}"
            )
    return reasons


def in_search_space(spec: ArchSpec, **kwargs: Any) -> bool:
    """True when ``spec`` satisfies eq. 5-6 (see :func:`space_violations`)."""
    return not space_violations(spec, **kwargs)



def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None:  # pragma: no cover - the pattern matches any non-space char
            raise ValueError(f"cannot read architecture {text!r} at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    if not tokens:
        raise ValueError("empty architecture string")
    return tokens


def _parse_list(tokens: list[str], pos: int, text: str, depth: int = 1) -> tuple[list[Any], int]:
    if depth > _MAX_DEPTH:
        raise ValueError(f"architecture {_short(text)} nests lists deeper than one level")
    if tokens[pos] != "[":
        raise ValueError(f"architecture {text!r} must start with '[', found token {tokens[pos]!r}")
    pos += 1
    items: list[Any] = []
    expect_item = True
    while pos < len(tokens):
        tok = tokens[pos]
        if tok == "]":
            if expect_item and items:
                raise ValueError(f"trailing comma before ']' in architecture {text!r}")
            return items, pos + 1
        if tok == ",":
            if expect_item:
                raise ValueError(f"unexpected token ',' in architecture {text!r}")
            expect_item = True
            pos += 1
            continue
        if not expect_item:
            raise ValueError(f"missing comma before token {tok!r} in architecture {text!r}")
        if tok == "[":
            sub, pos = _parse_list(tokens, pos, text, depth + 1)
            items.append(sub)
        else:
            if not _WIDTH.fullmatch(tok):
                raise ValueError(f"bad token {tok!r} in architecture {_short(text)}: expected an integer "
                                 f"(ASCII digits 0-9)")
            items.append(int(tok))
            pos += 1
        expect_item = False
    raise ValueError(f"architecture {text!r} is missing a closing ']'")


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of an architecture string, elided in the middle when long (error messages stay one line)."""
    shown = repr(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[: limit // 2]}...{shown[-limit // 2:]} ({len(text)} chars)"


#: Model-1 of Table 5, the paper's best single network.
MODEL_1 = ArchSpec.parse("[4,4,[4,4],[4,8],[8,8]]")
