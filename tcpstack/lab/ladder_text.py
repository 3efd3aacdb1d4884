"""The ladder as text for a terminal (`tcpstack ladder` without ``--svg``).

Text output
    Per segment a label line (the time in the margin; the label starts at the
    sender's lifeline) and an arrow line with both states after it, then any
    notes. Retransmissions are dashed, lost segments stop two thirds of the way
    with a cross. ``--ascii`` draws with ``| - > < X`` only, for terminals
    that render box drawing double-width (some CJK locales); ``--width``
    (default 100) sets the line length.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tcpstack.core.states import State
from tcpstack.lab.ladder_model import Ladder, Seg, Step
from tcpstack.lab.ladder_replay import as_ladder

DEFAULT_WIDTH = 100
MIN_WIDTH = 60


@dataclass(frozen=True, slots=True)
class _Glyphs:
    """The characters of the text diagram: Unicode box drawing or plain ASCII."""

    lifeline: str
    shaft: str
    dashed: str  # retransmissions
    lost: str
    bullet: str


UNICODE = _Glyphs(lifeline="│", shaft="─", dashed="╌", lost="✕", bullet="· ")
ASCII = _Glyphs(lifeline="|", shaft="-", dashed=".", lost="X", bullet="- ")

_TIME_W = 11  # "1234.567890": captures have microseconds, handshakes take a few
_STATE_W = max(len(s.value) for s in State)  # "SYN-RECEIVED"


def _arrow(step: Step, inner: int, g: _Glyphs) -> str:
    """The arrow between the lifelines: ``───>``, ``<───``, dashed when retransmitted,
    stopping two thirds of the way with a cross when lost."""
    shaft = g.dashed if step.retransmission else g.shaft
    right = step.seg.from_client
    if step.lost:
        reach = inner * 2 // 3
        body = shaft * (reach - 1) + g.lost
        return body.ljust(inner) if right else body[::-1].rjust(inner)
    return shaft * (inner - 1) + ">" if right else "<" + shaft * (inner - 1)


def draw_text(ladder: Ladder, *, absolute: bool = False, width: int = DEFAULT_WIDTH,
              ascii: bool = False) -> str:
    """The diagram for a terminal: ``width`` columns, one label line, one arrow
    line (with both states after the segment) and any notes per segment."""
    g = ASCII if ascii else UNICODE
    width = max(width, MIN_WIDTH)
    inner = width - (_TIME_W + 2 * _STATE_W + 5)  # between the lifelines
    blank_margin = " " * (_TIME_W + 1 + _STATE_W + 1)

    def row(left: str, middle: str, right: str, time: str = "") -> str:
        return (f"{time:>{_TIME_W}} {left:<{_STATE_W}} {g.lifeline}{middle}{g.lifeline} "
                f"{right}").rstrip()

    def inside(text: str, to_right: bool = True) -> str:
        return (" " + text).ljust(inner) if to_right else (text + " ").rjust(inner)

    def notes(texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            lines = textwrap.wrap(text, inner - 2 - len(g.bullet), break_on_hyphens=False)
            for k, line in enumerate(lines):
                yield row("", inside((g.bullet if k == 0 else "  ") + line), "")

    out = [_spread(blank_margin + ladder.client, ladder.server, width)]
    if not absolute:
        x, y = ladder.bases()
        if x or y:
            out.append(_spread(blank_margin + x, y, width))
    out.append(row(str(ladder.initial[0]), " " * inner, str(ladder.initial[1]), "time"))
    for step in ladder.steps:
        right = step.seg.from_client
        label = textwrap.wrap(ladder.label(step, absolute), inner - 2, break_on_hyphens=False)
        for k, line in enumerate(label):
            out.append(row("", inside(line, right), "", ladder.stamp(step) if k == 0
                           else ""))
        out.append(row(str(step.client_state), _arrow(step, inner, g), str(step.server_state)))
        out.extend(notes(step.notes))
    if ladder.trailer:
        out.extend(notes(ladder.trailer))
        out.append(row(str(ladder.final[0]), " " * inner, str(ladder.final[1])))
    return "\n".join(out) + "\n"


def _spread(left: str, right: str, width: int) -> str:
    """`left` and `right` on one line, `right` ending at `width` (or a space after `left`)."""
    return (left.ljust(width - len(right) - 1) + " " + right).rstrip()


def render_text(segments: Sequence[Seg] | Ladder, *, absolute: bool = False,
                width: int = DEFAULT_WIDTH, ascii: bool = False) -> str:
    """The text diagram of `segments` (analysed with default names) or of a `Ladder`."""
    return draw_text(as_ladder(segments), absolute=absolute, width=width, ascii=ascii)
