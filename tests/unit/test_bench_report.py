"""scripts/bench.py's report logic: which rows' ratios to trust, which stack
configurations run. The measurements themselves need root and time (`make bench`)."""

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench

CLEAN = {"stack_retrans": 0, "kernel_retrans": 0, "tx_drops": 0, "rx_drops": 0}
CLEAN_KERNEL = {"kernel_retrans": 0, "tx_drops": 0, "rx_drops": 0}


def row(stack: dict[str, int] | None = CLEAN, kernel: dict[str, int] | None = CLEAN_KERNEL,
        **kw: Any) -> bench.Row:
    fields: dict[str, Any] = {"metric": "download", "unit": "MB/s", "variant": "default",
                              "tcpstack": 8.0, "kernel": 1600.0,
                              "counters": {"stack": stack, "kernel": kernel}, **kw}
    return bench.Row(**fields)


def test_clean_runs_give_a_trusted_ratio() -> None:
    r = row()
    assert r.ratio == pytest.approx(0.005)
    assert r.doubts() == []
    assert r.trust == "yes"


def test_a_stack_retransmission_or_a_tun_drop_makes_the_ratio_untrusted() -> None:
    r = row(stack={**CLEAN, "stack_retrans": 5473, "tx_drops": 7247})
    assert r.trust == "NO"
    assert r.doubts() == ["stack run: stack RetransSegs +5,473",
                          "stack run: device tx_dropped +7,247"]


def test_the_kernel_run_counts_too() -> None:
    assert row(kernel={**CLEAN_KERNEL, "kernel_retrans": 3}).doubts() == [
        "kernel run: kernel TcpRetransSegs +3"]


def test_retransmissions_d_sacked_as_spurious_are_no_doubt() -> None:
    """The kernel's veth reorders under load: its fast retransmits that the
    receiver reports as duplicates (D-SACK) were spurious, and undone; the rest
    of its retransmissions still make the row untrusted."""
    reordered = {**CLEAN_KERNEL, "kernel_retrans": 135, "kernel_spurious": 135}
    assert row(kernel=reordered).trust == "yes"
    lost = {**CLEAN_KERNEL, "kernel_retrans": 135, "kernel_spurious": 100}
    assert row(kernel=lost).doubts() == [
        "kernel run: kernel TcpRetransSegs +135 (100 of them D-SACKed as spurious)"]


def test_counters_not_read_failed_requests_and_a_missing_figure_are_doubts() -> None:
    assert row(stack=None).doubts() == ["stack run: counters not read"]
    assert row(failed=2).doubts() == ["2 failed requests"]
    assert row(tcpstack=None).doubts() == ["no ratio: a run failed"]


def test_the_calibration_row_is_never_judged_by_its_drops() -> None:
    r = row(stack={**CLEAN, "tx_drops": 10**6}, calibration=True)
    assert r.doubts() == []
    assert r.trust == "calib"


def test_offload_both_runs_two_variants_when_the_daemon_has_the_option() -> None:
    runs, note = bench.variants("both", True, ["--txqueuelen", "500"])
    assert runs == [("offload on", ["--offload", "on", "--txqueuelen", "500"]),
                    ("offload off", ["--offload", "off", "--txqueuelen", "500"])]
    assert note == "tcpstack serve --offload on|off; every run with --txqueuelen 500"


def test_offload_without_daemon_support_runs_the_defaults_and_says_so() -> None:
    runs, note = bench.variants("off", False, [])
    assert runs == [("default", [])]
    assert "no --offload option" in note


def test_offload_default_runs_the_daemon_as_configured() -> None:
    assert bench.variants("default", True, []) == (
        [("default", [])], "tcpstack serve with its defaults")


def test_rows_carry_each_runs_counters_and_sum_failed_requests() -> None:
    args = bench.parse_args(["--mtu", "1500", "--repeat", "1"])
    stack_run = {"median": 8.0, "counters": {**CLEAN, "stack_retrans": 1}}
    kernel_run = {"median": 1600.0, "counters": CLEAN_KERNEL}
    results = {
        "default": {"down1500": stack_run, "up1500": None,
                    "ab": {"rate": 500.0, "failed": 1, "counters": CLEAN},
                    "echo": {"p50_us": 400.0, "p99_us": 2000.0, "counters": CLEAN}},
        "kernel": {"down1500": kernel_run, "up1500": kernel_run,
                   "ab": {"rate": 5000.0, "failed": 2, "counters": CLEAN_KERNEL},
                   "echo": {"p50_us": 70.0, "p99_us": 110.0, "counters": CLEAN_KERNEL}},
        "raw": {"stack": {"pps": 2.0}, "kernel": {"pps": 1.0}},
    }
    rows = {r.metric.split(" (")[0]: r for r in bench.build_rows(args, ["default"], results)}
    assert rows["download MTU 1500"].counters["stack"] == stack_run["counters"]
    assert rows["download MTU 1500"].trust == "NO"
    assert rows["upload MTU 1500"].tcpstack is None
    assert rows["connections/s"].failed == 3
    assert rows["echo RTT p99"].ratio == pytest.approx(2000 / 110)
    assert rows["echo RTT p50"].trust == "yes"
    assert rows["raw packet loop"].trust == "calib"
    assert rows["raw packet loop"].ratio == 2.0


def test_rounds_combine_into_medians_with_counters_and_failures_summed() -> None:
    """`make bench` measures in rounds that interleave the sides; a row gets the
    median of its rounds, and every round's retransmissions, drops and failed
    requests (one bad round is enough to doubt the row)."""
    rounds = [{"rate": 900.0, "failed": 0, "counters": CLEAN},
              {"rate": 1100.0, "failed": 2, "counters": {**CLEAN, "stack_retrans": 3}},
              {"rate": 1000.0, "failed": 0, "counters": CLEAN}]
    ab = bench.combine(rounds)
    assert ab["rate"] == 1000.0 and ab["failed"] == 2
    assert ab["counters"] == {**CLEAN, "stack_retrans": 3}
    assert ab["rounds"] == rounds
    download = bench.combine([{"median": 5.0, "counters": CLEAN}, {"median": 3.0,
                                                                   "counters": CLEAN}])
    assert download["median"] == 4.0 and download["samples"] == [5.0, 3.0]


def test_packet_rates_set_the_download_beside_the_raw_loop() -> None:
    args = bench.parse_args(["--mtu", "1500", "--repeat", "1"])
    results = {"offload off": {"down1500": {"median": 60.0, "pps": 50_000.0}},
               "offload on": {"down1500": None},
               "raw": {"stack": {"pps": 200_000.0}, "kernel": {"pps": 100_000.0}}}
    assert bench.packet_rates(args, ["offload off", "offload on"], results) == [
        "packets/s, download MTU 1500 [offload off]: 50,000 TCP segments in+out, "
        "25% of the raw TUN loop's 200,000"]
