"""TCP echo servers, one per runtime, for the echo benchmark.

    python -m bench.echo.servers NAME PORT [--max-seconds N]

NAME is one of SERVERS below.  The server listens on 127.0.0.1:PORT, prints
"READY" on stdout once it is accepting, and echoes every byte back until
it is killed.  The harness (bench/echo_run.py) starts one per measurement,
pinned to one CPU, and stops it with SIGTERM to its process group.

Each server is the code a user of that runtime would write for an echo
service, not a tuned special case:

  fibers           blocking style: listen + accept loop, a fiber per
                   connection doing recv(65536) / sendall().  The backend
                   (io_uring or epoll) comes from $FIBERS_BACKEND.
  uvloop-protocol  asyncio.Protocol, transport.write() in data_received,
                   on uvloop: the fastest thing asyncio-style code can do.
  uvloop-streams   asyncio.start_server, reader.read / writer.write + drain,
                   on uvloop: what most asyncio code actually looks like.
  asyncio-streams  the same streams code on the stock asyncio loop.
  gevent           gevent.server.StreamServer, blocking-style recv/sendall.
  trio             trio.serve_tcp, receive_some / send_all.

Common ground, so that the comparison is about the runtimes:
  - every server listens with backlog 1024 (500 clients connect at once);
  - every accepted socket has TCP_NODELAY (uvloop, asyncio and trio set it
    themselves; fibers and gevent set it here);
  - reads are up to 64 KiB.
A connection reset by the client is the end of that connection, not an
error.  SIGALRM after --max-seconds ends the process (its default action),
so a server can never outlive a harness that crashed.
"""
import argparse
import os
import signal
import socket
import sys

HOST = "127.0.0.1"
BACKLOG = 1024
READ_SIZE = 65536


def ready():
    # The harness waits for exactly this line; flush, stdout is a pipe.
    print("READY", flush=True)


def nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------- fibers

def serve_fibers(port):
    import fibers
    import fibers.net

    want = os.environ.get("FIBERS_BACKEND") or None

    def handle(conn):
        try:
            nodelay(conn)
            while True:
                data = conn.recv(READ_SIZE)
                if not data:
                    break
                conn.sendall(data)
        except OSError:   # reset / broken pipe when the load generator exits
            pass
        finally:
            conn.close()

    def main():
        lsock = fibers.net.listen((HOST, port), backlog=BACKLOG)
        ready()
        while True:   # bounded by --max-seconds / SIGTERM
            conn, _addr = lsock.accept()
            fibers.spawn(handle, conn)

    # Passing the backend explicitly makes Scheduler raise if it cannot run
    # it; the check below also catches a silent fallback, which would
    # publish epoll numbers under the io_uring name.
    sched = fibers.Scheduler(backend=want)
    if want and sched.backend != want:
        sys.exit(f"fibers server: asked for backend {want!r}, got {sched.backend!r}")
    print(f"fibers backend: {sched.backend}", file=sys.stderr, flush=True)
    sched.run(main)


# --------------------------------------------------------------- asyncio

async def _stream_echo(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _asyncio_main(port, protocol):
    import asyncio

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            # The closed-loop client reads every echo back, so the write
            # buffer stays small: the base class's no-op flow control is enough.
            self.transport.write(data)

    loop = asyncio.get_running_loop()
    if protocol:
        server = await loop.create_server(EchoProtocol, HOST, port, backlog=BACKLOG)
    else:
        server = await asyncio.start_server(_stream_echo, HOST, port, backlog=BACKLOG)
    ready()
    async with server:
        await server.serve_forever()


def serve_uvloop_protocol(port):
    import uvloop
    uvloop.run(_asyncio_main(port, protocol=True))


def serve_uvloop_streams(port):
    import uvloop
    uvloop.run(_asyncio_main(port, protocol=False))


def serve_asyncio_streams(port):
    import asyncio
    asyncio.run(_asyncio_main(port, protocol=False))


# --------------------------------------------------------------- gevent

def serve_gevent(port):
    from gevent.server import StreamServer

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

    server = StreamServer((HOST, port), handle, backlog=BACKLOG)
    server.start()
    ready()
    server.serve_forever()


# --------------------------------------------------------------- trio

def serve_trio(port):
    import trio

    async def handle(stream):
        try:
            while True:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def main():
        async with trio.open_nursery() as nursery:
            # start() returns once the listeners are bound and listening.
            await nursery.start(lambda task_status: trio.serve_tcp(
                handle, port, host=HOST, backlog=BACKLOG, task_status=task_status))
            ready()

    trio.run(main)


SERVERS = {
    "fibers": serve_fibers,
    "uvloop-protocol": serve_uvloop_protocol,
    "uvloop-streams": serve_uvloop_streams,
    "asyncio-streams": serve_asyncio_streams,
    "gevent": serve_gevent,
    "trio": serve_trio,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(SERVERS))
    ap.add_argument("port", type=int)
    ap.add_argument("--max-seconds", type=int, default=600,
                    help="hard lifetime; the process dies after this (default 600)")
    args = ap.parse_args(argv)
    signal.alarm(args.max_seconds)
    SERVERS[args.name](args.port)


if __name__ == "__main__":
    main()
