"""Network impairment on the stack's side of the TUN: loss, duplication, delay, reordering.

The test machines have no netem, and nftables on the kernel side can only drop.
To see how the TCP engine copes with a bad network, the stack can make its own
wire misbehave: packets it reads from the TUN (before they are decoded) and
packets it writes to it (after they are encoded) pass through an `Impairment`
per direction, so the TCB sees exactly what a lossy, jittery link would give it
and the kernel peer sees the same from its side.

One concern a module (each docstring gives the syntax and rules it implements):

- `tcpstack.lab.impair_spec`: the ``--impair`` syntax (random loss, duplication,
  delay, jitter, reordering per direction) and the `ImpairPlan`;
- `tcpstack.lab.impair_rules`: the ``--impair-rule`` syntax and which packets a
  rule picks out;
- `tcpstack.lab.impair_core`: `Impairment`, the sans-I/O core of one direction (a
  delay line ordered by due time, driven with explicit `now` values, so the
  unit tests use a fake clock);
- `tcpstack.lab.impair_tap`: `ImpairedPath`, the thin asyncio shell with one loop
  timer for the earliest due packet, and `install()`, which puts both
  directions between a `Stack` and its TUN;
- this module: the public names of all of them.
"""

from tcpstack.lab.impair_core import REORDER_MAX_HOLD, Impairment, make_rng
from tcpstack.lab.impair_rules import ImpairRule, StateLookup, TcpInfo, parse_rules, tcp_info
from tcpstack.lab.impair_spec import ImpairPlan, ImpairSpec, ImpairSpecError, parse_impair
from tcpstack.lab.impair_tap import ImpairedPath, Impairments, install, state_lookup

__all__ = [
    "REORDER_MAX_HOLD", "ImpairPlan", "ImpairRule", "ImpairSpec",
    "ImpairSpecError", "ImpairedPath", "Impairment", "Impairments", "StateLookup", "TcpInfo",
    "install", "make_rng", "parse_impair", "parse_rules", "state_lookup", "tcp_info",
]
