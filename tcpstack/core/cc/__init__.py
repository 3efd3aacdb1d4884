"""Congestion control algorithms behind one small interface (`base.CongestionControl`).

`make(name, mss)` builds the one the stack is configured for (`--cc`).
"""

from __future__ import annotations

from tcpstack.core.cc.base import CongestionControl
from tcpstack.core.cc.cubic import Cubic
from tcpstack.core.cc.newreno import NewReno

ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic}


def make(name: str, mss: int) -> CongestionControl:
    return ALGORITHMS[name](mss)
