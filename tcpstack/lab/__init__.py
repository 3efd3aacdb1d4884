"""Observation and lab tools: control socket, ss/stats, impairment, ladder
diagrams, demos and `tcpstack connect`."""
