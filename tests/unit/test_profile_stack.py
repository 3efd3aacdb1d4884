"""scripts/profile_stack.py's aggregation of py-spy's collapsed stacks: the text
summary and the flame graph of `make profile` are built from these."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import profile_stack as prof

TRUNK = "<module> (tcpstack/__main__.py:1);run (uvloop/__init__.py:80)"
RAW = f"""\
{TRUNK};Stack.run_reader (tcpstack/shell/stack.py:300);decode (tcpstack/wire/codec.py:40) 30
{TRUNK};Connection._run (tcpstack/shell/connection.py:90);Tcb.receive (tcpstack/core/tcb.py:500) 20
{TRUNK};Connection._run (tcpstack/shell/connection.py:90);Tcb.receive (tcpstack/core/tcb.py:500);\
seq_diff (tcpstack/core/seq.py:10) 10
{TRUNK};Stack.run_reader (tcpstack/shell/stack.py:300);decode (tcpstack/wire/codec.py:40) 5
{TRUNK};Stack.run_reader (tcpstack/shell/stack.py:300);Flag.__and__ (enum.py:1500) 5
{TRUNK} 30
not a sample line
"""


def test_parse_collapsed_sums_repeated_stacks_and_skips_other_lines() -> None:
    stacks = prof.parse_collapsed(RAW)
    assert sum(stacks.values()) == 100
    decode = (*TRUNK.split(";"), "Stack.run_reader (tcpstack/shell/stack.py:300)",
              "decode (tcpstack/wire/codec.py:40)")
    assert stacks[decode] == 35


def test_frame_parts_and_parts_of_the_stack() -> None:
    assert prof.frame_parts("Tcb.receive (tcpstack/core/tcb.py:500)") == ("Tcb.receive",
                                                                    "tcpstack/core/tcb.py")
    assert prof.frame_parts("_run_code (<frozen runpy>:88)") == ("_run_code", "<frozen runpy>")
    assert prof.frame_parts("odd frame") == ("odd frame", "")
    assert prof.part("decode (tcpstack/wire/codec.py:40)") == "codec"
    assert prof.part("in_cksum_add (dpkt/dpkt.py:10)") == "codec"
    assert prof.part("seq_diff (tcpstack/core/seq.py:10)") == "TCB"
    assert prof.part("http (tcpstack/apps/http.py:5)") == "apps"
    assert prof.part("Stack.run_reader (tcpstack/shell/stack.py:300)") == "shell"
    assert prof.part("Event.set (/usr/lib/python3.11/asyncio/locks.py:190)") == "event loop"
    assert prof.part("Flag.__and__ (enum.py:1500)") == "enum"
    assert prof.part("sha256 (hashlib.py:3)") == "other"


def test_own_time_is_the_leaf_and_total_time_leaves_out_the_trunk() -> None:
    stacks = prof.parse_collapsed(RAW)
    own = prof.own_time(stacks)
    assert own["decode (tcpstack/wire/codec.py)"] == 35
    assert own["Tcb.receive (tcpstack/core/tcb.py)"] == 20
    assert own["run (uvloop/__init__.py)"] == 30
    total = prof.total_time(stacks)
    assert total["Tcb.receive (tcpstack/core/tcb.py)"] == 30
    assert total["Stack.run_reader (tcpstack/shell/stack.py)"] == 40
    assert "run (uvloop/__init__.py)" not in total  # on every sample
    assert prof.part_time(stacks) == {"codec": 35, "TCB": 30, "event loop": 30, "enum": 5}


def test_summary_gives_cpu_microseconds_per_segment() -> None:
    # 1,000 µs of CPU per segment: codec's 35 % of the samples is 350 µs of it.
    text = prof.summary(prof.parse_collapsed(RAW), ["head line"], us_per_segment=1000, top=3)
    lines = text.splitlines()
    assert lines[0] == "head line"
    codec = next(line for line in lines if line.strip().startswith("codec"))
    assert "35.0 %" in codec
    assert "350.0 us/segment" in codec
    own = lines.index("Top 3 functions by own time:")
    assert lines[own + 2].split() == ["35.0", "35", "decode", "(tcpstack/wire/codec.py)"]
    total = lines.index("Top 3 functions by total time:")
    assert lines[own + 5] == ""
    assert lines[total + 2].split() == ["40.0", "40", "Stack.run_reader",
                                        "(tcpstack/shell/stack.py)"]


def test_flame_graph_is_svg_with_a_box_per_frame_and_its_samples() -> None:
    svg = ET.fromstring(prof.flame_svg(prof.parse_collapsed(RAW), "get & more", width=1000))
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text or "" for t in svg.iter(f"{ns}title")]
    # "all", 2 trunk frames, run_reader, decode, Flag.__and__, _run, receive, seq_diff
    assert len(titles) == 9
    assert "all: 100 samples, 100.0 %" in titles
    assert "decode (tcpstack/wire/codec.py): 35 samples, 35.0 %" in titles
    boxes = {g.find(f"{ns}title").text.split(":")[0]: g.find(f"{ns}rect")  # type: ignore[union-attr]
             for g in svg.iter(f"{ns}g")}
    assert float(boxes["all"].get("width", 0)) == 980.0  # width minus the margins
    assert float(boxes["decode (tcpstack/wire/codec.py)"].get("width", 0)) == 343.0
    assert boxes["decode (tcpstack/wire/codec.py)"].get("fill") == prof.COLORS["codec"]


def test_cpu_note_flags_samples_that_were_waits() -> None:
    # py-spy counts a thread that is runnable but not running (or in a wait it
    # takes for work) as active: more sampled time than CPU time is the sign.
    assert prof.cpu_note(sampled=7.7, cpu=2.8)[0].startswith("note: 4.9 s of the samples")
    assert prof.cpu_note(sampled=10.0, cpu=9.5) == []


NATIVE = f"""\
{TRUNK};Handle__run (loop.c:70959);CPyDef_stack___Stack____read_batch (__native_ab.c:97769);\
os_read (libpython3.11.so.1.0);read (libc.so.6) 40
{TRUNK};Handle__run (loop.c:70959);CPyDef_stack___Stack____read_batch (__native_ab.c:97769);\
CPyDef_codec___decode_fast (__native_ab.c:126761);Py_DECREF (object.h:537) 25
{TRUNK};Handle__run (loop.c:70959);CPyDef_connection___Connection___turn (__native_ab.c:10);\
CPyDef_tcb___Tcb___receive (__native_ab.c:20) 15
{TRUNK};Handle__run (loop.c:70959);CPyDef_stack___Stack___send_packet (__native_ab.c:30);\
os_write (libpython3.11.so.1.0);write (libc.so.6) 10
{TRUNK};Handle__run (loop.c:70959);task_step (_asynciomodule.c:2990);\
serve_request (tcpstack/apps/http.py:391) 6
{TRUNK};uv__io_poll (linux.c:1);0x7f3a95576ef8 (?) 4
"""


def test_native_frames_compiled_functions_and_system_calls() -> None:
    """py-spy --native: a compiled function is its module's part under its Python
    name, a C helper's time is its caller's, the TUN's system calls and the
    loop's C are parts of their own."""
    assert prof.part("CPyDef_codec___decode_fast (__native_ab.c:1)") == "codec"
    assert prof.part("CPyPy_tcb___Tcb___receive (__native_ab.c:1)") == "TCB"
    assert prof.part("CPyDef_base___CongestionControl___on_ack (__native_ab.c:1)") == "TCB"
    assert prof.part("CPyDef_stream___StreamReader___feed_data (__native_ab.c:1)") == "shell"
    assert prof.part("Py_DECREF (object.h:537)") is None
    assert prof.part("write (libc.so.6)") == "TUN write"
    assert prof.part("read (libc.so.6)") == "TUN read"
    assert prof.part("Handle__run (loop.c:70959)") == "event loop"
    assert prof.short("CPyDef_stack___Stack___send_packet (__native_ab.c:30)") == \
        "stack.Stack.send_packet (compiled)"
    assert prof.short("CPyDef_codec____word_sum (__native_ab.c:30)") == "codec._word_sum (compiled)"
    stacks = prof.parse_collapsed(NATIVE)
    assert prof.part_time(stacks) == {"TUN read": 40, "codec": 25, "TCB": 15, "TUN write": 10,
                                      "apps": 6, "event loop": 4}
    own = prof.own_time(stacks)
    assert own["codec.decode_fast (compiled)"] == 25  # Py_DECREF's samples are its caller's
    assert own["read (libc.so.6)"] == 40
