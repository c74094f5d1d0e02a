"""TLS echo servers, one per runtime, for the TLS echo benchmark.

    python -m bench.echo.tls_servers NAME PORT CERT KEY [--max-seconds N]

As bench/echo/servers.py (READY on stdout, echo until killed, SIGALRM
after --max-seconds), with TLS on every connection, using the
certificate chain CERT and key KEY (PEM files) in one server-side
ssl.SSLContext made the same way for every runtime:

  fibers           fibers.net.listen(ssl=ctx): accept loop, a fiber per
                   connection doing recv(65536) / sendall() on its
                   fibers.ssl.TLSSocket.  Backend from $FIBERS_BACKEND.
  uvloop-streams   asyncio.start_server(ssl=ctx) on uvloop, reader.read /
                   writer.write + drain: what asyncio TLS code looks like.
  uvloop-protocol  loop.create_server(ssl=ctx) with an asyncio.Protocol
                   (transport.write in data_received), on uvloop.
  gevent           gevent.server.StreamServer(ssl_context=ctx), ctx a
                   gevent.ssl.SSLContext (gevent's cooperative ssl module),
                   blocking-style recv / sendall.

Every accepted socket has TCP_NODELAY; reads are up to 64 KiB; the
handshake of each connection is done by the runtime in its own way (the
load generator finishes all handshakes before it measures).
"""
import argparse
import os
import signal
import ssl
import sys

from bench.echo.servers import BACKLOG, HOST, READ_SIZE, nodelay, ready


def context_of(cls, cert, key):
    ctx = cls(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def context(cert, key):
    return context_of(ssl.SSLContext, cert, key)


def serve_fibers(port, ctx):
    import fibers
    import fibers.net

    want = os.environ.get("FIBERS_BACKEND") or None

    def handle(conn):
        try:
            while True:
                data = conn.recv(READ_SIZE)
                if not data:
                    break
                conn.sendall(data)
        except OSError:   # SSLError, reset: the load generator went away
            pass
        finally:
            conn.close()

    def main():
        lsock = fibers.net.listen((HOST, port), backlog=BACKLOG, ssl=ctx)
        ready()
        while True:   # bounded by --max-seconds / SIGTERM
            conn, _addr = lsock.accept()
            nodelay(conn)
            fibers.spawn(handle, conn)

    sched = fibers.Scheduler(backend=want)
    if want and sched.backend != want:
        sys.exit(f"fibers server: asked for backend {want!r}, got {sched.backend!r}")
    print(f"fibers backend: {sched.backend}", file=sys.stderr, flush=True)
    sched.run(main)


async def _asyncio_main(port, ctx, protocol):
    import asyncio

    from bench.echo.servers import _stream_echo

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    loop = asyncio.get_running_loop()
    if protocol:
        server = await loop.create_server(EchoProtocol, HOST, port,
                                          backlog=BACKLOG, ssl=ctx)
    else:
        server = await asyncio.start_server(_stream_echo, HOST, port,
                                            backlog=BACKLOG, ssl=ctx)
    ready()
    async with server:
        await server.serve_forever()


def serve_uvloop_streams(port, ctx):
    import uvloop
    uvloop.run(_asyncio_main(port, ctx, protocol=False))


def serve_uvloop_protocol(port, ctx):
    import uvloop
    uvloop.run(_asyncio_main(port, ctx, protocol=True))


def serve_gevent(port, cert_key):
    from gevent.server import StreamServer
    import gevent.ssl

    # gevent's own context class: a stdlib SSLContext would wrap sockets in
    # the stdlib's blocking SSLSocket, and one connection still waiting for
    # its handshake would then stall the whole server.
    ctx = context_of(gevent.ssl.SSLContext, *cert_key)

    def handle(sock, _addr):
        try:
            nodelay(sock)
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass

    server = StreamServer((HOST, port), handle, backlog=BACKLOG,
                          ssl_context=ctx)
    server.start()
    ready()
    server.serve_forever()


SERVERS = {
    "fibers": serve_fibers,
    "uvloop-streams": serve_uvloop_streams,
    "uvloop-protocol": serve_uvloop_protocol,
    "gevent": serve_gevent,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(SERVERS))
    ap.add_argument("port", type=int)
    ap.add_argument("cert")
    ap.add_argument("key")
    ap.add_argument("--max-seconds", type=int, default=600,
                    help="hard lifetime; the process dies after this (default 600)")
    args = ap.parse_args(argv)
    signal.alarm(args.max_seconds)
    if args.name == "gevent":
        SERVERS[args.name](args.port, (args.cert, args.key))
    else:
        SERVERS[args.name](args.port, context(args.cert, args.key))


if __name__ == "__main__":
    main()
