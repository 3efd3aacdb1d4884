"""Differential conformance tests: the same packet-level scripts against Linux and tcpstack."""
