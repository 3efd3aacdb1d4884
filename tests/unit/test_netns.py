"""The lab toolkit's parts that need no root: bounded waits on a child's output,
the error a failed lab command gives, and that the stack never imports the toolkit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tcpstack.lab import netns
from tcpstack.lab.netns import LabError, LineCollector, NetnsCommandError, wait_until


def collector(*lines: bytes, close: bool = True) -> tuple[LineCollector, int]:
    """A LineCollector on a pipe already holding `lines` (closed: at EOF after them)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"".join(line + b"\n" for line in lines))
    if close:
        os.close(write_fd)
    return LineCollector(os.fdopen(read_fd, "rb"), "test"), write_fd


def test_wait_until_returns_what_the_predicate_found_in_the_lines() -> None:
    out, _ = collector(b"starting", b"tcpstack ready: 10.0.0.2", b"log")
    found = out.wait_until(lambda lines: next((x for x in lines if "ready" in x), None), 5)
    assert found == "tcpstack ready: 10.0.0.2"
    assert out.wait_for("tcpstack ready:", 5, prefix=True) == found


def test_wait_until_gives_none_at_eof_without_a_match() -> None:
    out, _ = collector(b"starting", b"error: busy")
    assert out.wait_until(lambda lines: "ready" in lines, 5) is None
    assert out.eof and out.lines == ["starting", "error: busy"]


def test_wait_until_gives_none_after_the_timeout_while_the_pipe_is_open() -> None:
    out, write_fd = collector(b"starting", close=False)
    try:
        assert out.wait_for("ready", 0.05) is None
        assert not out.eof
    finally:
        os.close(write_fd)


def test_a_failed_command_is_a_lab_error_naming_the_command_and_its_message() -> None:
    error = NetnsCommandError(1, ["ip", "netns", "add", "x"], "", "mount failed: EPERM\n")
    assert isinstance(error, LabError) and isinstance(error, subprocess.CalledProcessError)
    assert str(error) == "`ip netns add x` failed (exit 1): mount failed: EPERM"


def test_polling_wait_raises_lab_error_when_the_condition_never_holds() -> None:
    with pytest.raises(LabError, match=r"condition not met within 0\.0s: 'never'"):
        wait_until(lambda: False, timeout=0.01, interval=0.005, message="never")


def test_the_stack_and_the_wire_never_import_the_lab_toolkit() -> None:
    """The toolkit is for demo, scripts and tests; the daemon must not depend on it."""
    code = ("import sys, tcpstack.shell.stack, tcpstack.wire.codec, tcpstack.core.tcb, "
            "tcpstack.wire.tun; "
            "print('tcpstack.lab.netns' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_daemons_run_from_the_directory_that_holds_the_package() -> None:
    """`python -m tests.conformance.daemon` and `-m tcpstack` need the repository
    root as the daemon's working directory, wherever netns.py sits in the package."""
    assert (netns.SOURCE_ROOT / "tcpstack" / "__init__.py").is_file()
