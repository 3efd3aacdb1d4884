"""`tcpstack demo NAME`: each of the textbook chapter's scenarios run end to end as a user runs it.

The command is run as a subprocess from the test's own namespace (it makes a
namespace of its own, which is part of what is tested: it must be gone
afterwards). Each test reads the printed ladder the way a reader does, arrow
by arrow (`arrows` from the ladder's unit tests), and checks the textbook chapter's
story: which segments, which way, in which order, with the marks and the
stack's states the scenario is about. Exact rows are only asserted where the
scenario fixes them (the handshake); after it, Linux's delayed ACKs may merge
or split segments, so only the order of the FINs and the final states are.
"""

from __future__ import annotations

import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tcpstack.lab import demo, ladder, netns
from tests.helpers import arrows

#: Bound for one demo run; the longest (lost-third) takes about 7.5 s.
DEMO_TIMEOUT = 30.0
Row = tuple[str, str, str, str]  # label, direction, client state, server state


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def run_demo(*args: str) -> tuple[int, str, str]:
    """Run `tcpstack demo ARGS`; check it left no namespace; (status, stdout, stderr).

    On timeout the demo gets SIGTERM first (it then deletes its namespace
    itself), SIGKILL only if that fails; a namespace it names and left
    behind is deleted here so a failure cannot leak into later tests.
    """
    proc = subprocess.Popen([*netns.tcpstack_argv(), "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=netns.SOURCE_ROOT,
                            env=netns.daemon_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        netns.stop_process(proc, signal.SIGTERM, 15)
        out, err = proc.communicate()
        pytest.fail(f"`tcpstack demo {' '.join(args)}` ran over {DEMO_TIMEOUT:g} s\n"
                    f"{out}\n{err}")
    finally:
        left = remove_leftovers(proc.pid)
    assert not left, f"namespaces left behind: {left}"
    named = re.search(r"in namespace (\S+)", out)
    assert named is None or named[1] not in namespaces()
    return proc.returncode, out, err


def remove_leftovers(pid: int) -> set[str]:
    """Delete the namespaces demo process `pid` left behind; return their names."""
    left = {ns for ns in namespaces() if ns.startswith(f"{demo.NS_PREFIX}-{pid}-")}
    for ns in left:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    return left


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the demo's unique TUN name)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return pids


def _is_note(line: str) -> bool:
    """Notes are the only ladder rows with nothing in the margin (no time, no state)."""
    cells = line.split("│")
    return len(cells) == 3 and not cells[0].strip() and any(c.isalnum() for c in cells[1])


def ladder_rows(out: str) -> list[Row]:
    """The arrows of the ladder(s) in `out`, notes left out: a wrapped note's second
    line would otherwise read as a label."""
    text = out.split("\nWhat happened\n")[0]
    return arrows("\n".join(line for line in text.splitlines() if not _is_note(line)))


def notes(out: str) -> list[str]:
    """The notes under the arrows, unwrapped (``·`` starts one)."""
    found: list[str] = []
    for line in out.splitlines():
        if _is_note(line):
            text = line.split("│")[1].strip()
            if text.startswith("·"):
                found.append(text[1:].strip())
            elif found:
                found[-1] += " " + text
    return found


def labels(rows: list[Row]) -> list[tuple[str, str]]:
    return [(label, way) for label, way, _, _ in rows]


def check_handshake(rows: list[Row], out: str) -> None:
    assert labels(rows[:4]) == [
        ("SYN seq=x", ">"), ("SYN,ACK seq=y ack=x+1", "<"), ("ACK seq=x+1 ack=y+1", ">"),
        ("PSH,ACK seq=x+1 ack=y+1 len=16", ">")]
    assert [r[2:] for r in rows[:3]] == [("SYN-SENT", "SYN-RECEIVED"),
                                         ("ESTABLISHED", "SYN-RECEIVED"),
                                         ("ESTABLISHED", "ESTABLISHED")]
    fins = [way for label, way, _, _ in rows if "FIN" in label]
    assert fins == [">", "<"], rows  # the client closes first
    assert rows[-1][2:] == ("TIME-WAIT", "CLOSED")
    assert "server LAST-ACK -> CLOSED: ACK of FIN received" in notes(out)


def check_four_segment(rows: list[Row], out: str) -> None:
    assert rows[:5] == [
        ("SYN seq=x", ">", "SYN-SENT", "SYN-RECEIVED"),
        ("ACK seq=y ack=x+1", "<", "SYN-SENT", "SYN-RECEIVED"),  # dropped by Linux
        ("SYN seq=y", "<", "SYN-RECEIVED", "SYN-RECEIVED"),  # a simultaneous open
        ("SYN,ACK seq=x ack=y+1", ">", "SYN-RECEIVED", "ESTABLISHED"),
        ("ACK seq=y+1 ack=x+1", "<", "ESTABLISHED", "ESTABLISHED")]
    assert any("SYN+ACK received (simultaneous open)" in n for n in notes(out))
    assert rows[-1][3] == "CLOSED"


def check_lost_third(rows: list[Row], out: str) -> None:
    synack, ack = "SYN,ACK seq=y ack=x+1", "ACK seq=x+1 ack=y+1 (lost)"
    assert rows == [
        ("SYN seq=x", ">", "SYN-SENT", "SYN-RECEIVED"),
        (synack, "<", "ESTABLISHED", "SYN-RECEIVED"),
        (ack, ">", "ESTABLISHED", "SYN-RECEIVED"),
        (f"{synack} (retransmission #1)", "<", "ESTABLISHED", "SYN-RECEIVED"),
        (ack, ">", "ESTABLISHED", "SYN-RECEIVED"),
        (f"{synack} (retransmission #2)", "<", "ESTABLISHED", "SYN-RECEIVED"),
        (ack, ">", "ESTABLISHED", "SYN-RECEIVED"),
        ("RST seq=y+1", "<", "CLOSED", "CLOSED")]
    times = [float(m[1]) for m in re.finditer(r"^\s+(\d+\.\d{6}) .*(?:retransmission #|RST )",
                                              out, re.M)]
    assert [round(t) for t in times] == [1, 3, 7], times  # --synack-retries 2
    assert '"error": "ECONNRESET"' in out
    assert notes(out)[-1] == ("server SYN-RECEIVED -> CLOSED: SYN+ACK sent 3 times without "
                              "an answer, RST sent")
    assert notes(out).count("dropped by --impair-rule: the stack never saw it") == 3


def check_stale_syn(rows: list[Row], out: str) -> None:
    wanted, stale = out.split("\n2. ")
    first = ladder_rows(wanted)
    assert labels(first[:3]) == [("SYN seq=x", ">"), ("SYN,ACK seq=y ack=x+1", "<"),
                                 ("ACK seq=x+1 ack=y+1", ">")]
    assert first[-1][3] == "TIME-WAIT"
    assert "server TIME-WAIT -> CLOSED: 2*MSL elapsed in TIME-WAIT" in notes(wanted)
    assert ladder_rows(stale) == [
        ("SYN seq=x", ">", "CLOSED", "SYN-RECEIVED"),  # the old SYN, after the close
        ("SYN,ACK seq=y ack=x+1", "<", "CLOSED", "SYN-RECEIVED"),
        ("RST seq=x+1", ">", "CLOSED", "LISTEN")]  # the client refuses: back to LISTEN
    assert notes(stale)[-1] == ("server SYN-RECEIVED -> LISTEN: RST received in SYN-RECEIVED, "
                                "back to LISTEN")
    # The same x, a new y: the second ladder's header names another ISN for y.
    xs = re.findall(r"x = (\d+) \(ISN\)\s+y = (\d+)", out)
    assert len(xs) == 2 and xs[0][0] == xs[1][0] and xs[0][1] != xs[1][1], xs


def check_close(rows: list[Row], out: str) -> None:
    fins = [(way, rows[i][3]) for i, (label, way, _, _) in enumerate(rows) if "FIN" in label]
    assert fins == [("<", "FIN-WAIT-1"), (">", "TIME-WAIT")], rows  # the stack closes first
    assert rows[-1][2:] == ("CLOSED", "TIME-WAIT")
    assert notes(out)[-1] == "server TIME-WAIT -> CLOSED: 2*MSL elapsed in TIME-WAIT"
    assert out.split("\nWhat happened\n")[0].rstrip().splitlines()[-1].split() == [
        "CLOSED", "│", "│", "CLOSED"]


CHECKS: dict[str, Callable[[list[Row], str], None]] = {
    "handshake": check_handshake, "four-segment": check_four_segment,
    "lost-third": check_lost_third, "stale-syn": check_stale_syn, "close": check_close}


@pytest.mark.parametrize("name", list(CHECKS))
def test_demo(name: str, tmp_path: Path) -> None:
    """The scenario runs, draws the textbook chapter's arrows in order, explains, cleans up."""
    extra = ["--svg", str(tmp_path / "d.svg"), "--keep-pcap", str(tmp_path / "d.pcap")]
    rc, out, err = run_demo(name, *(extra if name == "close" else []))
    assert (rc, err) == (0, ""), out
    CHECKS[name](ladder_rows(out), out)
    assert "\nWhat happened\n" in out and len(out.split("\nWhat happened\n")[1]) > 300
    if name == "close":
        assert ET.parse(tmp_path / "d.svg").getroot().tag.endswith("svg")
        _, server, segs = ladder.select_connection(
            ladder.read_capture(str(tmp_path / "d.pcap")), demo.HTTP_PORT)
        assert server.port == demo.HTTP_PORT and len(segs) == len(ladder_rows(out))


def test_demo_in_the_chapters_terms() -> None:
    """--lang zh: the same run and ladder, the story in the textbook chapter's words."""
    rc, out, err = run_demo("close", "--lang", "zh")
    assert (rc, err) == (0, ""), out
    ladder_part, story = out.split("\n过程说明\n")
    assert "What happened" not in out
    rows = arrows("\n".join(line for line in ladder_part.splitlines() if not _is_note(line)))
    assert [way for label, way, _, _ in rows if "FIN" in label] == ["<", ">"], rows
    for term in ("连接释放", "FIN-WAIT-1（终止等待1）", "TIME-WAIT（时间等待）", "2*MSL"):  # noqa: RUF001
        assert term in story.replace("\n  ", ""), story


def test_list_names_every_scenario() -> None:
    rc, out, err = run_demo("--list")
    assert (rc, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()] == list(demo.SCENARIOS)


@pytest.mark.parametrize("args", [["nonesuch"], [], ["close", "--svg", "/nonexistent/x.svg"]])
def test_usage_errors(args: list[str]) -> None:
    rc, out, err = run_demo(*args)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1, (rc, out, err)
    assert err.startswith("tcpstack: error: demo")


def test_not_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.main(["handshake"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("tcpstack: error: demo needs root (it creates a network "
                                 "namespace and a TUN device)\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_demo_cleans_up(sig: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM) while the client waits: the daemon is stopped, the
    namespace deleted, exit status 128 + signal."""
    proc = subprocess.Popen([*netns.tcpstack_argv(), "demo", "lost-third"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=netns.SOURCE_ROOT,
                            env=netns.daemon_env(), start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = netns.LineCollector(proc.stdout), netns.LineCollector(proc.stderr)
    try:
        assert out.wait_for("  client:", 10), (out.text(), err.text())  # daemon ready
        tun = re.search(r"--tun (\S+)", out.text())
        assert tun is not None and processes_mentioning(tun[1]), out.text()
        proc.send_signal(sig)
        assert proc.wait(15) == 128 + sig
    finally:
        netns.stop_process(proc, signal.SIGKILL, 5)
        left = remove_leftovers(proc.pid)
    out.wait_eof(5)
    err.wait_eof(5)
    assert err.text() == f"tcpstack: interrupted by {sig.name}"
    assert not left, f"namespaces left behind: {left}"
    assert processes_mentioning(tun[1]) == []  # the daemon is gone too
