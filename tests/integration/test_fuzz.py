"""The short `make fuzz`: 20,000 hostile packets while a reference transfer runs.

The same code as `scripts/fuzz.py` (imported, not re-implemented), with a
fixed seed and a packet count that takes seconds: stateless malformed packets
from spoofed sources plus in-window segments into the reference client's live
connections that a correct stack must not act on (RFC 9293 3.10.7.4, RFC 5961,
RFC 7323). It asserts every check of the full run: no exception escaped, every
packet the TUN handed to the stack is counted exactly once and every injected
one reached the device, and each reference round (echo, POST /sha256, GET
/bytes/N) came back byte-exact. Injected data with an ACK far in the past
(issue 8, finding 1) corrupts the reference streams until the RFC 5961 §5.2
check is in.

The script makes its own namespace and daemon, so this test needs none of the
conftest fixtures, only the prerequisite gate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.nstools import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import fuzz
import proofkit

PACKETS = 20_000
SEED = 8


def test_short_fuzz_run_keeps_every_byte_and_counts_every_packet(tmp_path: Path) -> None:
    args = fuzz.parse_args(["--packets", str(PACKETS), "--duration", "45",
                            "--seed", str(SEED), "--out", str(tmp_path)])
    checks, run = fuzz.fuzz(args)
    failed = [c.name for c in checks if not c.passed]
    assert not failed, (
        f"{', '.join(failed)}\n{proofkit.render(checks)}\n"
        f"accounting: {json.dumps(run.get('accounting'))}\n"
        f"reference: {json.dumps(run.get('reference'))}\n(seed {SEED}: "
        f"scripts/fuzz.py --packets {PACKETS} --seed {SEED} repeats the packet stream)")
    assert run["sent"] >= PACKETS
