"""Command-line validation for `serve` and `connect`, in process: a bad command line is
one stderr line and exit status 2; a good one maps onto the settings and TcpConfig.

`TunDevice` is replaced by a trap, so a command line wrongly accepted here fails
the test instead of creating a device on the host.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tcpstack import cli
from tcpstack.apps import (
    HttpLimits,
    Upstream,
    configured,
    handle_echo,
    handle_forward,
    handle_http,
)
from tcpstack.lab.impair import ImpairSpec


@pytest.fixture(autouse=True)
def no_tun(monkeypatch) -> None:
    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("a TUN device was created for a command line that should fail")

    monkeypatch.setattr(cli, "TunDevice", trap)


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """main(argv) -> (exit status, non-empty stderr lines), from argparse or from main."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


def settings(argv: list[str]) -> cli.ServeSettings | cli.ConnectSettings:
    return cli.settings_from_args(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--msl", "-1"], "--msl: -1 is outside 0..3600"),
        (["serve", "--msl", "nan"], "--msl: nan is outside"),
        (["serve", "--msl", "inf"], "--msl: inf is outside"),
        (["serve", "--msl", "3601"], "--msl: 3601 is outside"),
        (["serve", "--msl", "soon"], "invalid float value"),
        (["serve", "--impair", "loss=5"], "--impair: 'loss=5': loss=5: expected a percentage"),
        (["serve", "--impair", "loss=5%,bogus=1"], "unknown key 'bogus'"),
        (["serve", "--impair", "delay=20"], "expected a duration"),
        (["serve", "--impair", "sideways:loss=1%"], "unknown direction 'sideways'"),
        (["serve", "--impair", "in:loss=1%", "--impair", "loss=2%"], "impaired twice"),
        (["connect", "10.0.0.1", "80", "--impair", "dup=200%"], "over 100%"),
        (["connect", "10.0.0.1", "80", "--msl", "-0.5"], "--msl: -0.5 is outside"),
        (["connect", "10.0.0.1"], "required: PORT"),
        (["connect"], "required: HOST, PORT"),
        (["connect", "10.0.0.1", "http"], "invalid int value: 'http'"),
        (["connect", "10.0.0.1", "0"], "PORT: 0 is outside 1..65535"),
        (["connect", "10.0.0.1", "65536"], "PORT: 65536 is outside"),
        (["connect", "example.com", "80"], "HOST: expected an IPv4 address"),
        (["connect", "10.0.0.2", "80"], "is the stack's own address"),
        (["connect", "10.0.0.1", "80", "--syn-retries", "256"], "--syn-retries: 256"),
        (["connect", "10.0.0.1", "80", "--mtu", "10"], "--mtu: 10 is outside"),
        (["connect", "10.0.0.1", "80", "--addr", "10.1.0.2"], "not a host address"),
        (["connect", "10.0.0.1", "80", "--app", "echo:7"], "unrecognized arguments"),
        (["serve", "--syn-retries", "3"], "unrecognized arguments"),
        (["serve", "--cc", "bbr"], "invalid choice: 'bbr'"),
        (["serve", "--rcv-buf", "100"], "--rcv-buf: 100 is outside"),
        (["serve", "--snd-buf", "10"], "--snd-buf: 10 is below 1024"),
        (["serve", "--mem-limit", "1000"], "--mem-limit: 1000 is below 65536"),
        (["serve", "--rto-min", "2", "--rto-max", "1"], "--rto-min/--rto-max"),
        (["serve", "--rto-min", "0"], "--rto-min/--rto-max"),
        (["serve", "--keepalive", "a,b"], "--keepalive: expected IDLE"),
        (["serve", "--keepalive", "1,2,3,4"], "--keepalive: expected IDLE"),
        (["serve", "--keepalive", "10,1,2.5"], "PROBES must be a whole number"),
        (["serve", "--challenge-ack-limit", "-1"], "--challenge-ack-limit: -1 is below 0"),
        (["serve", "--challenge-ack-interval", "nan"], "--challenge-ack-interval: nan"),
        (["serve", "--challenge-ack-interval", "-1"], "--challenge-ack-interval: -1"),
        (["serve", "--min-mss", "47"], "--min-mss: 47 is outside 48..65535"),
        (["connect", "10.0.0.1", "80", "--min-mss", "65536"], "--min-mss: 65536 is outside"),
        (["serve", "--reasm-timeout", "0"], "--reasm-timeout: 0 is outside"),
        (["serve", "--reasm-timeout", "nan"], "--reasm-timeout: nan is outside"),
        (["connect", "10.0.0.1", "80", "--reasm-mem", "-1"], "--reasm-mem: -1 is below 0"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(argv: list[str], needle: str, capsys) -> None:
    rc, lines = run(argv, capsys)
    assert rc == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("tcpstack: error: ") and needle in lines[0], lines


def test_msl_and_impair_reach_the_settings() -> None:
    s = settings(["serve", "--msl", "0.5", "--impair", "in:loss=5%,seed=3",
                  "--impair", "out:delay=20ms,jitter=5ms", "--synack-retries", "2"])
    assert isinstance(s, cli.ServeSettings)
    assert s.daemon.config.msl == 0.5 and s.daemon.config.synack_retries == 2
    assert s.daemon.impair.inbound == ImpairSpec(loss=0.05, seed=3)
    assert s.daemon.impair.outbound == ImpairSpec(delay=0.020, jitter=0.005)
    assert s.daemon.log_level == "info"


def test_defaults_match_linux_time_wait_and_no_impairment() -> None:
    s = settings(["serve"])
    assert s.daemon.config.msl == 30.0  # TIME-WAIT 2*MSL = 60 s, as Linux
    assert not s.daemon.impair


def test_connect_settings() -> None:
    s = settings(["connect", "10.9.0.1", "8080", "--host-addr", "10.9.0.1/24",
                  "--addr", "10.9.0.7", "--syn-retries", "1", "--msl", "0"])
    assert isinstance(s, cli.ConnectSettings)
    assert (s.host, s.port) == (IPv4Address("10.9.0.1"), 8080)
    assert s.daemon.addr == IPv4Address("10.9.0.7")
    assert s.daemon.config.syn_retries == 1 and s.daemon.config.msl == 0.0
    assert s.daemon.log_level == "warning"  # quiet like nc: stderr only for trouble


def test_log_level_default_is_per_subcommand() -> None:
    """The shared options are added per subcommand, so connect's quieter default
    does not leak into serve (as it would with argparse parents)."""
    parser = cli.build_parser()
    assert parser.parse_args(["connect", "10.0.0.1", "1"]).log_level == "warning"
    assert parser.parse_args(["serve"]).log_level == "info"


def test_tcp_tuning_reaches_the_config() -> None:
    s = settings(["serve", "--cc", "newreno", "--rcv-buf", "65536", "--snd-buf", "4096",
                  "--rto-min", "0.05", "--rto-max", "10", "--keepalive", "30,5"])
    c = s.daemon.config
    assert (c.cc, c.rcv_buf, c.snd_buf, c.rto_min, c.rto_max) == ("newreno", 65536, 4096,
                                                                   0.05, 10.0)
    assert (c.keepalive, c.keepalive_idle, c.keepalive_interval, c.keepalive_probes) == (
        True, 30.0, 5.0, 9)


def test_mem_limit_reaches_the_config_and_defaults_to_a_share_of_ram() -> None:
    assert settings(["serve", "--mem-limit", "1000000"]).daemon.config.mem_limit == 1_000_000
    assert settings(["serve"]).daemon.config.mem_limit >= 64 << 20


def test_tcp_tuning_defaults_are_linux_like() -> None:
    c = settings(["serve"]).daemon.config
    assert (c.cc, c.rto_min, c.keepalive) == ("cubic", 0.2, False)


def test_hardening_options_reach_the_config() -> None:
    c = settings(["serve", "--challenge-ack-limit", "0", "--challenge-ack-interval", "1.5",
                  "--min-mss", "100"]).daemon.config
    assert (c.challenge_ack_limit, c.challenge_ack_interval, c.min_snd_mss) == (0, 1.5, 100)
    c = settings(["connect", "10.0.0.1", "80"]).daemon.config
    assert (c.challenge_ack_limit, c.challenge_ack_interval, c.min_snd_mss) == (1000, 0.5, 48)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--http-header-timeout", "0"], "--http-header-timeout: 0 is outside 0 < SECONDS"),
    (["--http-send-timeout", "nan"], "--http-send-timeout: nan is outside"),
    (["--http-keepalive-timeout", "-1"], "--http-keepalive-timeout: -1 is outside"),
    (["--http-max-header-bytes", "100"], "--http-max-header-bytes: 100 is outside 1024.."),
    (["--http-max-body-bytes", "-1"], "--http-max-body-bytes: -1 is outside 0.."),
    (["--http-max-body-bytes", "1.5"], "invalid int value"),
    (["--idle-timeout", "inf"], "--idle-timeout: inf is outside"),
    (["--forward-connect-timeout", "0"], "--forward-connect-timeout: 0 is outside"),
    (["--app", "forward:8080"], "expected forward:PORT=HOST:PORT, got 'forward:8080'"),
    (["--app", "forward:8080=10.0.0.1"], "expected forward:PORT=HOST:PORT"),
    (["--app", "forward:web=10.0.0.1:80"], "expected forward:PORT=HOST:PORT"),
    (["--app", "forward:8080=example.com:80"], "HOST must be an IPv4 address, got 'example.com'"),
    (["--app", "forward:8080=10.0.0.1:0"], "forward: port 0 is outside 1..65535"),
    (["--app", "forward:70000=10.0.0.1:80"], "forward: port 70000 is outside"),
    (["--app", "forward:8080=10.0.0.2:80"], "the stack's own address (--addr), would loop"),
    (["--app", "echo:80", "--app", "forward:80=10.0.0.1:80"], "port 80 is taken twice"),
])
def test_bad_app_limit_is_one_line_and_exit_2(argv: list[str], needle: str, capsys) -> None:
    rc, err = run(["serve", *argv], capsys)
    assert rc == 2
    assert len(err) == 1 and needle in err[0], err


def test_app_limits_reach_the_handlers() -> None:
    s = settings(["serve", "--http-header-timeout", "5", "--http-body-timeout", "6",
                  "--http-keepalive-timeout", "7", "--http-send-timeout", "8",
                  "--http-max-header-bytes", "2048", "--http-max-body-bytes", "0",
                  "--idle-timeout", "9"])
    assert isinstance(s, cli.ServeSettings)
    assert s.app_options.http == HttpLimits(5, 6, 7, 8, 2048, 0)
    assert s.app_options.idle_timeout == 9
    http = configured("http", s.app_options)
    assert http.func is handle_http and http.keywords == {"limits": s.app_options.http}
    echo = configured("echo", s.app_options)
    assert echo.func is handle_echo and echo.keywords == {"idle_timeout": 9}
    defaults = settings(["serve"]).app_options
    assert defaults.http == HttpLimits(60, 60, 75, 60, 16384, 1 << 30)  # nginx's
    assert defaults.idle_timeout is None


def test_forward_rules_reach_the_handlers() -> None:
    s = settings(["serve", "--app", "forward:8080=10.0.0.1:80", "--app", "echo:7",
                  "--app", "forward:2222=192.0.2.9:22", "--forward-connect-timeout", "3"])
    assert isinstance(s, cli.ServeSettings)
    assert s.apps == (("forward", 8080), ("echo", 7), ("forward", 2222))
    assert s.forwards == {8080: Upstream(IPv4Address("10.0.0.1"), 80),
                          2222: Upstream(IPv4Address("192.0.2.9"), 22)}
    handler = configured("forward", s.app_options, s.forwards[2222])
    assert handler.func is handle_forward
    assert handler.keywords == {"upstream": s.forwards[2222], "connect_timeout": 3}
    assert settings(["serve"]).app_options.forward_connect_timeout == 60  # nginx's


@pytest.mark.parametrize(("argv", "offload"), [
    (["serve"], True), (["serve", "--offload", "off"], False),
    (["connect", "10.0.0.1", "80", "--offload", "on"], True),
])
def test_offload_on_by_default(argv: list[str], offload: bool) -> None:
    assert settings(argv).daemon.offload is offload


def test_reassembly_options_reach_the_config_with_linux_defaults() -> None:
    c = settings(["serve"]).daemon.config
    assert (c.reasm_timeout, c.reasm_mem) == (30.0, 4 << 20)
    c = settings(["connect", "10.0.0.1", "80", "--reasm-timeout", "5", "--reasm-mem", "0"]
                 ).daemon.config
    assert (c.reasm_timeout, c.reasm_mem) == (5.0, 0)
