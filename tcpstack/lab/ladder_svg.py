"""The SVG form of a ladder diagram (`tcpstack ladder --svg`), for documents.

It draws what `tcpstack.lab.ladder_replay.analyze` found, nothing more, so the text and
the SVG diagrams always agree; this module only knows geometry. The picture is
the textbook chapter's: two vertical lifelines (client left, server right), one slanted
arrow per segment with its label written along it, and each side's state
written beside its lifeline where it changes (the text form repeats every
state on every line; a document reads better without the repetition).

Rows are evenly spaced rather than proportional to time: a handshake takes
microseconds and a SYN+ACK backoff a minute, so any time scale squashes one of
them. The timestamps stand in the left margin instead.

The document is self-contained (styles and arrowheads inside, no fonts or
scripts fetched) and well-formed XML: every text goes through the escaper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from tcpstack.lab.ladder_model import Ladder, Seg, Step
from tcpstack.lab.ladder_replay import as_ladder

WIDTH = 980
LEFT = 260  # x of the client's lifeline
RIGHT = 720  # x of the server's lifeline
BOX, BOX_H = 240, 42  # the boxes with the names and the ISN legend
HEADER = 96  # the boxes with the names, the ISN legend and the initial states
ROW = 44  # vertical space of one arrow (more with notes)
DROP = 26  # how far an arrow falls between the lifelines: the slant
NOTE = 15  # height of one note line
LOST_REACH = 0.62  # a lost segment's arrow stops this fraction of the way

STYLE = """
text { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 12px; }
.name { font-weight: bold; font-size: 13px; }
.legend, .time { fill: #555; }
.state { font-weight: bold; fill: #6a1b9a; }
.note { font-style: italic; font-size: 11px; fill: #555; }
.lifeline { stroke: #333; stroke-width: 2; }
.seg { stroke-width: 1.6; }
.c2s { stroke: #1f5fa8; } .s2c { stroke: #2e7d32; }
text.c2s { fill: #1f5fa8; stroke: none; } text.s2c { fill: #2e7d32; stroke: none; }
.retx { stroke-dasharray: 6 4; }
.lost { stroke: #c62828; } text.lost { fill: #c62828; stroke: none; font-weight: bold; }
"""


@dataclass(slots=True)
class _Canvas:
    """The SVG elements drawn so far, in painting order."""

    parts: list[str]

    def text(self, x: float, y: float, content: str, cls: str, anchor: str = "start",
             transform: str = "") -> None:
        extra = f" transform={quoteattr(transform)}" if transform else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" '
                          f'text-anchor="{anchor}"{extra}>{escape(content)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str,
             marker: str = "") -> None:
        end = f' marker-end="url(#{marker})"' if marker else ""
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'class="{cls}"{end}/>')


def _marker(name: str, color: str) -> str:
    return (f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            f'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>')


def _arrow(canvas: _Canvas, ladder: Ladder, step: Step, y: float, absolute: bool) -> None:
    """One segment: the slanted line, its head (or a cross when lost) and its label."""
    right = step.seg.from_client
    direction = "c2s" if right else "s2c"
    x1, x2 = (LEFT, RIGHT) if right else (RIGHT, LEFT)
    reach = LOST_REACH if step.lost else 1.0
    xe, ye = x1 + (x2 - x1) * reach, y + DROP * reach
    cls = f"seg {direction}" + (" retx" if step.retransmission else "")
    if step.lost:
        canvas.line(x1, y, xe, ye, cls + " lost")
        canvas.text(xe, ye + 5, "✕", "lost", anchor="middle")
    else:
        canvas.line(x1, y, xe, ye, cls, marker=f"head-{direction}")
    # Along the arrow, readable left to right whichever way the arrow points.
    angle = math.degrees(math.atan2(DROP, RIGHT - LEFT)) * (1 if right else -1)
    mx, my = (x1 + xe) / 2, (y + ye) / 2
    canvas.text(0, -5, ladder.label(step, absolute), direction, anchor="middle",
                transform=f"translate({mx:.1f},{my:.1f}) rotate({angle:.2f})")


def draw(ladder: Ladder, *, absolute: bool = False) -> str:
    """The SVG document of `ladder` (see the module docstring)."""
    c = _Canvas([])
    centre = (LEFT + RIGHT) / 2
    x_legend, y_legend = ("", "") if absolute else ladder.bases()
    for x, name, legend in ((LEFT, ladder.client, x_legend), (RIGHT, ladder.server, y_legend)):
        c.parts.append(f'<rect x="{x - BOX / 2}" y="8" width="{BOX}" height="{BOX_H}" rx="4" '
                       f'fill="#f4f4f4" stroke="#333"/>')
        c.text(x, 26, name, "name", anchor="middle")
        if legend:
            c.text(x, 42, legend, "legend", anchor="middle")
    c.text(LEFT - 10, HEADER - 14, str(ladder.initial[0]), "state", anchor="end")
    c.text(RIGHT + 10, HEADER - 14, str(ladder.initial[1]), "state")
    c.text(10, HEADER - 14, "time (s)", "time")
    shown = list(ladder.initial)
    y = float(HEADER)
    for step in ladder.steps:
        c.text(10, y + 4, ladder.stamp(step), "time")
        _arrow(c, ladder, step, y, absolute)
        # Each state is written where its side meets the arrow: at the tail for
        # the sender, at the head for the receiver.
        client_y, server_y = (y, y + DROP) if step.seg.from_client else (y + DROP, y)
        for side, (state, x, yy, anchor) in enumerate((
                (step.client_state, LEFT - 10, client_y, "end"),
                (step.server_state, RIGHT + 10, server_y, "start"))):
            if state is not shown[side]:
                c.text(x, yy + 4, str(state), "state", anchor=anchor)
                shown[side] = state
        for k, note in enumerate(step.notes):
            c.text(centre, y + DROP + 16 + k * NOTE, note, "note", anchor="middle")
        y += max(ROW, DROP + 24 + len(step.notes) * NOTE)
    for k, note in enumerate(ladder.trailer):
        c.text(centre, y + k * NOTE, note, "note", anchor="middle")
    y += len(ladder.trailer) * NOTE
    for side, (state, x, anchor) in enumerate(((ladder.final[0], LEFT - 10, "end"),
                                               (ladder.final[1], RIGHT + 10, "start"))):
        if state is not shown[side]:
            c.text(x, y + 4, str(state), "state", anchor=anchor)
    bottom = y + 16
    lifelines = [f'<line x1="{x}" y1="{8 + BOX_H}" x2="{x}" y2="{bottom:.1f}" class="lifeline"/>'
                 for x in (LEFT, RIGHT)]
    height = bottom + 12
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}">')
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>', head,
        f"<title>{escape(f'{ladder.client} / {ladder.server}')}</title>",
        f"<style>{STYLE}</style>",
        "<defs>" + _marker("head-c2s", "#1f5fa8") + _marker("head-s2c", "#2e7d32") + "</defs>",
        '<rect width="100%" height="100%" fill="white"/>',
        *lifelines, *c.parts, "</svg>", ""])


def render_svg(segments: Sequence[Seg] | Ladder, *, absolute: bool = False) -> str:
    """A self-contained SVG document of `segments` or of a `Ladder`."""
    return draw(as_ladder(segments), absolute=absolute)
