"""Fuzzing the architecture-string parser: any text gives an ArchSpec or a ValueError naming the input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naslung.models.spec import ArchSpec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Near-misses of the notation: its own tokens plus the ones int() would wrongly accept.
TOKENS = st.sampled_from(["[", "]", ",", "4", "8", "16", "0", "-1", "1_0", "+4", "\u0664", "\uff18", " ", "x",
                          "4.5", "[[", "]]", "[4,4,", "[4],[8],[8]]", "\t", "\n", "1e3", "٤"])


def _check(text: str) -> None:
    try:
        spec = ArchSpec.parse(text)
    except ValueError as exc:
        assert type(exc) is ValueError
        message = str(exc)
        assert "\n" not in message.strip() or text.count("\n"), message
        if text.strip():  # the message quotes the input, or the offending token of it
            quoted = repr(text)[:20] in message
            assert quoted or any(tok in message for tok in text.split(",") if tok.strip()), message
        return
    # Accepted: ASCII digit widths only, and the canonical form parses back to the same spec.
    canonical = str(spec)
    assert canonical.isascii() and ArchSpec.parse(canonical) == spec
    assert all(c in "0123456789[], " for c in text.strip().replace("\t", " ").replace("\n", " ")), text


@FUZZ
@given(st.text(max_size=60))
def test_any_text(text: str) -> None:
    _check(text)


@FUZZ
@given(st.lists(TOKENS, max_size=30).map("".join))
def test_token_soup(text: str) -> None:
    _check(text)


@FUZZ
@given(st.integers(0, 5000), st.integers(0, 5000))
def test_unbalanced_deep_nesting(opening: int, closing: int) -> None:
    _check("[" * opening + "4" + "]" * closing)


@pytest.mark.parametrize("text", ["[4,4,[4,4],[4,8],[8,8]]", " [ [4] , [8] , [16] ] "])
def test_valid_examples_still_parse(text: str) -> None:
    _check(text)
