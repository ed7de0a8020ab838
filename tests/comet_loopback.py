"""Runs the Comet VOEvent broker (twistd's comet plugin) with its listeners bound to
127.0.0.1 only: Comet 3.1 has no option for the interface, so the name it listens with
is given the interface before twistd builds the service. Arguments are twistd's."""
import functools
import sys

from twisted.application import internet

import comet.service.broker as broker

broker.TCPServer = functools.partial(internet.TCPServer, interface="127.0.0.1")

from twisted.scripts.twistd import run  # noqa: E402

sys.argv[0] = "twistd"
run()
