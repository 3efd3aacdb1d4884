"""Initial sequence numbers that an off-path attacker cannot guess (RFC 6528).

ISN = M + F(localip, localport, remoteip, remoteport, secretkey), where M is a
4-microsecond clock (RFC 9293 3.4.1) and F a keyed hash. The clock keeps ISNs
of successive incarnations of one 4-tuple moving forward; the secret key makes
the offset unpredictable from outside.
"""

from __future__ import annotations

import hashlib
import os
import struct


class IsnGenerator:
    """Computes ISNs; the caller passes the time, so tests can pin it."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret is not None else os.urandom(16)

    def isn(self, local: bytes, lport: int, remote: bytes, rport: int, now: float) -> int:
        """RFC 6528 section 3: the clock part M ticks every 4 microseconds."""
        msg = local + struct.pack(">H", lport) + remote + struct.pack(">H", rport)
        f = int.from_bytes(hashlib.blake2s(msg, key=self._key, digest_size=4).digest(), "big")
        m = int(now * 250_000)
        return (m + f) & 0xFFFFFFFF
