"""The HTTP app's time limits on the real daemon, against a kernel-side slowloris.

The unit tests (tests/unit/test_apps.py) cover each limit on loopback; this
one shows the whole path: `--http-header-timeout` parsed by the CLI, handed to
the handler, and a Linux socket trickling one header byte at a time getting
408 and the close well before it could finish its head.
"""

from __future__ import annotations

import json

import pytest

HEADER_TIMEOUT = 1.0  # seconds: the daemon's --http-header-timeout
INTERVAL = 0.2  # seconds between the client's header bytes


def test_slowloris_gets_408_and_close(make_stack, ns_python) -> None:
    stack = make_stack(apps=["http:80"], extra_args=["--http-header-timeout", str(HEADER_TIMEOUT)])
    code = f"""
import json, socket, time
s = socket.create_connection(({stack.vip!r}, 80), timeout=10)
start = time.monotonic()
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: ")
s.settimeout({INTERVAL})
got, sent = b"", 0
while time.monotonic() - start < 20:  # bounded: the daemon's default would be 60 s
    try:
        data = s.recv(4096)
    except socket.timeout:  # nothing yet: send the next byte, as a slowloris does
        try:
            s.send(b"X")
            sent += 1
        except OSError:
            break
        continue
    except ConnectionResetError:
        break
    if not data:
        break
    got += data
print(json.dumps({{"elapsed": time.monotonic() - start, "sent": sent,
                  "response": got.decode("latin-1")}}))
"""
    cp = ns_python(code, timeout=60)
    if cp.returncode != 0:
        pytest.fail(f"client failed: {cp.stderr}")
    res = json.loads(cp.stdout.strip().splitlines()[-1])
    assert res["response"].startswith("HTTP/1.1 408 Request Timeout\r\n"), res
    assert "Connection: close" in res["response"], res
    assert res["sent"] >= 2, res  # it was trickling, not silent
    # The 408 came at the header timeout (the daemon's clock started first, and
    # libuv's timers may fire a few ms early) and the close right after it (a
    # lingering close ends when the client's bytes stop or after 2 s).
    assert 0.9 * HEADER_TIMEOUT <= res["elapsed"] < HEADER_TIMEOUT + 5, res
