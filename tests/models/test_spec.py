"""ArchSpec: notation <-> dataclass <-> JSON, malformed strings, search-space checks."""

from __future__ import annotations

import json

import pytest

from naslung.models.spec import MODEL_1, ArchSpec, coerce_spec, in_search_space, space_violations

BIG = "[4,4,[64,64,64],[128,128,256],[256,256,256,512]]"


@pytest.mark.parametrize("text", ["[4,4,[4,4],[4,8],[8,8]]", "[4,4,[8],[16,32],[64,64,128]]", BIG])
def test_round_trips(text: str):
    spec = ArchSpec.parse(text)
    assert str(spec) == text
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ArchSpec.from_json(json.dumps(text)) == spec
    assert coerce_spec(text) == coerce_spec(spec.to_dict()) == coerce_spec(spec) == spec


def test_properties_and_whitespace():
    spec = ArchSpec.parse(" [ 4, 4, [4, 4], [4, 8], [8, 8] ] ")
    assert spec == MODEL_1
    assert spec.depths == (2, 2, 2) and spec.depth == 6
    assert spec.block_widths == (4, 4, 4, 8, 8, 8)
    assert spec.out_channels == 8
    assert ArchSpec.parse("[[4],[8],[16]]").stem == (4, 4)  # eq. 7 form gets the paper's stem


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("[4,4,[4,x],[4],[8]]", "'x'"),
        ("[4,4,[4,4.5],[4],[8]]", "'4.5'"),
        ("4,4,[4],[4],[8]", "'4'"),
        ("[4,4,[4],[4],[8]],", "','"),
        ("[4,4,[4] [4],[8]]", "'['"),
        ("[4,4,[4,],[4],[8]]", "trailing comma"),
        ("[4,4,,[4],[4],[8]]", "','"),
    ],
)
def test_malformed_strings_name_the_token(text: str, token: str):
    with pytest.raises(ValueError, match=token.replace("[", r"\[").replace(".", r"\.")):
        ArchSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("[4,4,[4],[4]", "closing"),
        ("[4,4,[4],[4]]", "3 stage lists"),
        ("[4,[4],[4],[8]]", "2 stem widths"),
        ("[4,4,[4],[],[8]]", "no residual block"),
        ("[4,4,[4],[0],[8]]", "non-positive"),
        ("[4,4,[[4]],[4],[8]]", "nests"),
    ],
)
def test_malformed_structures(text: str, fragment: str):
    with pytest.raises(ValueError, match=fragment):
        ArchSpec.parse(text)


def test_search_space():
    assert in_search_space(MODEL_1)
    big = ArchSpec.parse(BIG)
    reasons = space_violations(big)
    assert not in_search_space(big)
    assert any("channel set" in r and "256" in r for r in reasons)
    assert any("depth" in r for r in reasons)  # 10 blocks > 9
    assert any("decrease" in r for r in space_violations(ArchSpec.parse("[4,4,[8],[4],[8]]")))
    assert any("balance" in r for r in space_violations(ArchSpec.parse("[4,4,[4],[4],[4,4,4,4,4,4,4]]")))
    assert any("stem" in r for r in space_violations(ArchSpec.parse("[4,8,[8],[8],[8]]")))


def test_bad_records():
    with pytest.raises(ValueError, match="not an architecture record"):
        ArchSpec.from_dict({"stages": []})
    with pytest.raises(ValueError, match="cannot interpret"):
        coerce_spec(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["[4,4,[1_0],[8],[8]]", "[+4,4,[4],[8],[8]]", "[8\u0664,8]", "[4,4,[4],[8],[\uff18]]",
     "[4,4,[4],[-8],[8]]", "[4,4,[4],[8],[0x8]]"],
)
def test_widths_are_ascii_digits_only(text: str):
    with pytest.raises(ValueError, match="ASCII digits"):
        ArchSpec.parse(text)


@pytest.mark.parametrize("depth", [3, 50, 2000, 100_000])
def test_deep_nesting_is_a_value_error(depth: int):
    with pytest.raises(ValueError, match="nests"):
        ArchSpec.parse("[" * depth + "]" * depth)
    with pytest.raises(ValueError, match="nested too deeply|not an architecture"):
        ArchSpec.from_json("[" * depth + "]" * depth)
