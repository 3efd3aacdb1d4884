"""The wire: IPv4/TCP codecs, the TUN device and its virtio-net header, pcap."""
