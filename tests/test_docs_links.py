"""The README and the manual in docs/: every relative link resolves, and the README stays a landing page.

A link is ``[text](target)`` or ``![alt](target)`` outside fenced code blocks and inline code. A relative
target must name an existing file or folder (relative to the Markdown file); a ``#anchor`` (alone or after a
Markdown file) must be the slug of a heading in that file, as GitHub makes it: lower case, punctuation other
than ``-`` and ``_`` dropped, spaces turned into ``-``, and ``-1``, ``-2`` ... appended to repeated slugs.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        lines.append("" if fenced else line)
    return lines


def slug(heading: str) -> str:
    text = _INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(_prose_lines(path.read_text(encoding="utf-8")), 1):
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((number, m.group(1)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{where} (no heading with that anchor in {dest.relative_to(root)})")
    return problems


def test_the_slugs_follow_github() -> None:
    assert slug("What `make demo` printed (PHANTOM data)") == "what-make-demo-printed-phantom-data"
    assert slug("The phantom's limits") == "the-phantoms-limits"
    assert slug("POP search: how it works here") == "pop-search-how-it-works-here"
    assert slug("Changed this round: epochs, selection and the 2-D architecture") == (
        "changed-this-round-epochs-selection-and-the-2-d-architecture")


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("# Top\n[ok](there.md#a-heading) [self](#top) [gone](missing.md) [bad](there.md#nope)\n"
                    "`[code](not-a-link.md)`\n```\n[fenced](not-a-link-either.md)\n```\n![img](img.png)\n")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "missing.md (no such file)", "there.md#nope (no heading with that anchor in there.md)",
        "img.png (no such file)"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_readme_is_a_landing_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_no_machine_specific_paths() -> None:
    pattern = re.compile(r"(?<![\w.~-])/(work|tmp|root)/")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in markdown_files()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []
