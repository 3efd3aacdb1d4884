"""`--config FILE` (tcpstack/configfile.py): the long options as TOML keys, the
command line over the file over the defaults, and one line with exit 2 for a
file that is unreadable, not TOML, or has an unknown key or a wrongly typed value."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from tcpstack import cli, configfile
from tests.nstools import REPO_ROOT
from tests.unit.test_cli_args import run

CONFIG = """\
tun = "tcps7"
host-addr = "10.9.0.1/24"
addr = "10.9.0.2"
msl = 5            # an integer where the option takes a float
rcv_buf = 65536    # underscores work too
app = ["echo:7", "http:8080"]
split-synack = true
impair = "loss=5%,seed=1"
syncookies = "always"
"""


def load(path: Path, *argv: str) -> cli.ServeSettings | cli.ConnectSettings:
    full = [*argv, "--config", str(path)]
    parser = cli.build_parser()
    return cli.settings_from_args(configfile.apply(parser, full, parser.parse_args(full)))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tcpstack.toml"
    path.write_text(CONFIG)
    return path


def test_the_file_sets_the_options(config: Path) -> None:
    s = load(config, "serve")
    assert isinstance(s, cli.ServeSettings)
    d = s.daemon
    assert (d.tun, d.host_addr, d.addr) == ("tcps7", IPv4Interface("10.9.0.1/24"),
                                            IPv4Address("10.9.0.2"))
    assert (d.config.msl, d.config.rcv_buf, d.config.split_synack) == (5.0, 65536, True)
    assert d.config.syncookies == "always" and d.impair.inbound.loss == 0.05
    assert s.apps == (("echo", 7), ("http", 8080))


def test_the_command_line_overrides_the_file(config: Path) -> None:
    """Even with the default value (--msl 30), and a list replaces the file's list."""
    s = load(config, "serve", "--msl", "30", "--app", "discard:9", "--addr", "10.9.0.3")
    assert isinstance(s, cli.ServeSettings)
    assert s.daemon.config.msl == 30.0 and s.apps == (("discard", 9),)
    assert s.daemon.addr == IPv4Address("10.9.0.3")
    assert s.daemon.tun == "tcps7" and s.daemon.config.rcv_buf == 65536  # the rest from the file


def test_connect_takes_the_shared_options_from_the_file(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "connect.toml"
    path.write_text('host-addr = "10.9.0.1/24"\naddr = "10.9.0.2"\nsyn-retries = 2\n')
    s = load(path, "connect", "10.9.0.1", "80")
    assert isinstance(s, cli.ConnectSettings)
    assert s.daemon.addr == IPv4Address("10.9.0.2") and s.daemon.config.syn_retries == 2


@pytest.mark.parametrize(("text", "needle"), [
    ("bogus = 1\n", "unknown key 'bogus' (the keys are the long options of tcpstack serve"),
    ("syn-retries = 1\n", "unknown key 'syn-retries'"),  # connect's, not serve's
    ("config = 'other.toml'\n", "unknown key 'config'"),
    ("msl = '30'\n", "msl: expected a number, got '30'"),
    ("backlog = 1.5\n", "backlog: expected an integer, got 1.5"),
    ("backlog = true\n", "backlog: expected an integer, got True"),
    ("split-synack = 1\n", "split-synack: expected true or false, got 1"),
    ("app = [7]\n", "app: expected a string or an array of strings, got [7]"),
    ("cc = 'bbr'\n", "cc: expected one of 'cubic', 'newreno', got 'bbr'"),
    ("[tcp]\nmsl = 1\n", "unknown key 'tcp'"),
    ("host-addr = '10.0.0.1/24'\nhost_addr = '10.0.0.1/24'\n",
     "'host_addr' and 'host-addr' are the same option"),
    ("msl = \n", "not valid TOML: Invalid value (at line 1, column 7)"),
    ("msl = -1\n", "--msl: -1 is outside 0..3600"),  # checked as on the command line
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, capsys, text: str,
                                           needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc, lines = run(["serve", "--config", str(path)], capsys)
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith("tcpstack: error: ") and needle in lines[0], lines


def test_an_unreadable_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    rc, lines = run(["serve", "--config", str(tmp_path / "missing.toml")], capsys)
    assert rc == 2 and lines == [
        f"tcpstack: error: --config {tmp_path / 'missing.toml'}: No such file or directory"]
    rc, lines = run(["serve", "--config", str(tmp_path)], capsys)
    assert rc == 2 and lines == [f"tcpstack: error: --config {tmp_path}: Is a directory"]


def test_the_documented_file_and_unit_work(tmp_path: Path) -> None:
    """docs/config.md's example file is accepted as written, and the example unit
    starts `serve` with a config file."""
    page = (REPO_ROOT / "docs" / "config.md").read_text()
    example = tmp_path / "tcpstack.toml"
    example.write_text(page.split("```toml\n", 1)[1].split("```", 1)[0])
    s = load(example, "serve")
    assert isinstance(s, cli.ServeSettings) and s.apps == (("echo", 7), ("http", 80))
    unit = (REPO_ROOT / "docs" / "tcpstack.service").read_text()
    [exec_start] = [ln.split("=", 1)[1] for ln in unit.splitlines()
                    if ln.startswith("ExecStart=")]
    assert f"ExecStart={exec_start}" in page
    args = cli.build_parser().parse_args(exec_start.split()[1:])
    assert (args.command, args.config) == ("serve", "/etc/tcpstack.toml")
