"""Echo-server benchmark: C load generator, C reference server, and one
Python echo server per runtime.  Driven by ``python -m bench.echo_run``."""
