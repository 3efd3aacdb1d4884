"""The asyncio shell: the Stack that reads the TUN, connections, listeners,
streams and transports that applications see."""
