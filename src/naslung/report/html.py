"""HTML rendering of the report: one self-contained page, every image inlined as a base64 data URI.

No template engine and no external asset: the page opens offline, from a mail attachment or an archive.
Every piece of text from the experiment folder goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}tr.ref td{color:#666;font-style:italic}
.phantom{background:#fff3cd;border:2px solid #d39e00;padding:.8em;font-weight:bold;margin:1em 0}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.8em;color:#555;max-width:560px}
.note{color:#555;font-size:.85em}code{font-size:.9em}
"""


def png_data_uri(path_or_bytes: str | Path | bytes) -> str:
    """``data:image/png;base64,...`` of a PNG file or of PNG bytes."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def pct(value: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage; ``-`` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.{digits}f}"


def ci_cell(stat: dict[str, float]) -> str:
    """``87.3 [80.1, 92.0]`` (percent) from ``{"value", "lo", "hi"}``."""
    return f"{pct(stat['value'])} <span class=note>[{pct(stat['lo'])}, {pct(stat['hi'])}]</span>"


def diff_cell(stat: dict[str, float]) -> str:
    """``+3.2 [-1.0, 7.5] p=0.12`` (percentage points) from ``{"diff", "lo", "hi", "p"}``."""
    if stat["diff"] is None or math.isnan(stat["diff"]):
        return "-"
    sign = "+" if stat["diff"] >= 0 else ""
    p = "-" if math.isnan(stat["p"]) else f"{stat['p']:.3f}"
    return (f"{sign}{100 * stat['diff']:.1f} <span class=note>[{pct(stat['lo'])}, {pct(stat['hi'])}] "
            f"p={p}</span>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], table_id: str, left: int = 1,
          row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are trusted HTML (escape text before), the first ``left`` columns left-aligned."""
    head = "".join(f"<th class={'l' if i < left else 'r'}>{escape(h)}</th>" for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cls = f" class={row_classes[k]}" if row_classes and row_classes[k] else ""
        cells = "".join(f"<td class={'l' if i < left else 'r'}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table id={table_id}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(uri: str, caption: str, fig_id: str = "") -> str:
    ident = f" id={fig_id}" if fig_id else ""
    return (f"<figure{ident}><img src=\"{uri}\" alt=\"{escape(caption)}\">"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def page(title: str, sections: Sequence[tuple[str, str, str]], banner: str = "", meta: str = "") -> str:
    """The whole document: ``sections`` are ``(id, heading, html)``; ``banner`` shows above everything."""
    toc = "".join(f"<li><a href=#{sid}>{escape(head)}</a></li>" for sid, head, _ in sections)
    parts = [f"<section id={sid}><h2>{escape(head)}</h2>{body}</section>" for sid, head, body in sections]
    banner_html = f"<div class=phantom id=phantom-banner>{escape(banner)}</div>" if banner else ""
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>{banner_html}<p class=note>{escape(meta)}</p><ul>{toc}</ul>"
            f"{''.join(parts)}{banner_html}</body></html>\n")
