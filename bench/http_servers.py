"""Runners for the HTTP servers that have no command line of their own.

    python -m bench.http_servers NAME MODULE:APP PORT

  bjoern         bjoern.run(app, host, port), as its README starts it.
  gevent-pywsgi  gevent.pywsgi.WSGIServer((host, port), app, log=None)
                 .serve_forever(): no access log, as for every server here.

Both listen on 127.0.0.1 with a backlog of 1024, like the others (500
clients connect at once), and run until SIGTERM.  bench/http_run.py
starts them (pinned, with a hard lifetime) and stops them.
"""
import importlib
import sys

HOST = "127.0.0.1"
BACKLOG = 1024


def load(target):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv=None):
    name, target, port = (argv or sys.argv[1:])[:3]
    app, port = load(target), int(port)
    if name == "bjoern":
        import bjoern
        bjoern.run(app, HOST, port, listen_backlog=BACKLOG)
    elif name == "gevent-pywsgi":
        from gevent.pywsgi import WSGIServer
        WSGIServer((HOST, port), app, log=None, backlog=BACKLOG).serve_forever()
    else:
        sys.exit(f"unknown server {name!r}")


if __name__ == "__main__":
    main()
