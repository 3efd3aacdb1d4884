"""`python -m tcpstack`: the same as the `tcpstack` command."""

import sys

from tcpstack.cli import main

sys.exit(main())
