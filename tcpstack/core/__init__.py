"""The sans-I/O TCP core: the TCB state machine (RFC 9293) and everything it
owns. No asyncio, no sockets, no wall clock: time is passed in."""
