"""tcpstack: a userspace TCP/IPv4 stack on asyncio over a Linux TUN device."""

__version__ = "0.1.0"
