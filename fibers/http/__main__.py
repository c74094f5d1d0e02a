"""``fibers-http module:app --bind HOST:PORT [--workers N] ...``: serve a
WSGI app from the command line (``python -m fibers.http`` is the same).
Flags follow gunicorn's names where they overlap."""
import argparse
import importlib
import logging
import os
import sys

from . import Limits, run


def _address(text):
    if text.startswith("unix:"):
        return text[5:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(
            f"--bind wants HOST:PORT or unix:PATH, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return (host, int(port))


def _load(spec):
    module, sep, name = spec.partition(":")
    if not module:
        raise SystemExit(f"fibers-http: {spec!r} is not MODULE:APP")
    sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise SystemExit(f"fibers-http: cannot import {module!r}: {e}")
    obj = mod
    for part in (name or "application").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"fibers-http: {module!r} has no "
                             f"{name or 'application'!r}")
    if not callable(obj):
        raise SystemExit(f"fibers-http: {spec!r} is not callable")
    return obj


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="fibers-http", description="Serve a WSGI app on fibers.")
    p.add_argument("app", help="MODULE:APP (APP defaults to 'application')")
    p.add_argument("-b", "--bind", type=_address,
                   default=("127.0.0.1", 8000),
                   help="HOST:PORT or unix:PATH (default 127.0.0.1:8000)")
    p.add_argument("-w", "--workers", type=int, default=1,
                   help="processes sharing the port (0: one per core)")
    p.add_argument("--certfile", help="TLS certificate (PEM)")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument("--access-log", action="store_true",
                   help="log each request (common log format) to stderr")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get on SIGTERM/SIGINT")
    p.add_argument("--keep-alive", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open")
    p.add_argument("--worker-connections", type=int, default=10000,
                   help="concurrent connections per worker")
    p.add_argument("--limit-request-fields", type=int, default=100)
    p.add_argument("--limit-request-field-size", type=int, default=65536,
                   help="bytes of request line and headers")
    p.add_argument("--backend", choices=("io_uring", "epoll"))
    args = p.parse_args(argv)
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if bool(args.certfile) != bool(args.keyfile):
        p.error("--certfile and --keyfile go together")
    ctx = None
    if args.certfile:
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.certfile, args.keyfile)
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    if not args.access_log:
        logging.getLogger("fibers.http.access").setLevel(logging.WARNING)
    app = _load(args.app)
    limits = Limits(max_headers=args.limit_request_fields,
                    max_header_size=args.limit_request_field_size,
                    keepalive_timeout=args.keep_alive,
                    max_connections=args.worker_connections)
    run(app, args.bind, workers=args.workers, ssl=ctx, backlog=args.backlog,
        limits=limits, access_log=args.access_log,
        grace=args.graceful_timeout, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
