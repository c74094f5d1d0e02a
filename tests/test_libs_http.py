"""requests, urllib3, urllib.request and http.client, unmodified, in
fibers under fibers.patch(), against a ThreadingHTTPServer in a thread
(tests/libservers.py), plain and over TLS, on both pump backends.

100 fetches from 100 fibers overlap: the server holds every request
until 100 are in flight at once (bounded), so the test can only pass if
no fetch blocked the thread."""
import http.client
import ssl
import urllib.request

import pytest

import capabilities
import fibers
from libservers import (PEER_WAIT, CountingHTTPServer, patched,  # noqa: F401
                        rsched)

requests = capabilities.importorskip(
    "requests", "client_libs", "requests (make's TEST_DEPS) is not installed")
urllib3 = capabilities.importorskip(
    "urllib3", "client_libs", "urllib3 (make's TEST_DEPS) is not installed")
trustme = capabilities.importorskip(
    "trustme", "trustme", "trustme (make's TEST_DEPS) makes the certificates")

N = 100


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    return ca, str(pem), sctx


@pytest.fixture
def server(request, ca):
    """A server wanting N requests in flight; TLS when the test's `tls`
    parameter says so."""
    tls = request.getfixturevalue("tls")
    srv = CountingHTTPServer(N, ssl_context=ca[2] if tls else None)
    yield srv
    srv.stop()


def _requests(srv, ca_pem, i):
    r = requests.get(srv.url(f"/{i}"), headers={"X-Who": "requests"},
                     timeout=PEER_WAIT, verify=ca_pem or True)
    return r.status_code, r.content


def _urllib3(pool, srv, i):
    r = pool.request("GET", srv.url(f"/{i}"), headers={"X-Who": "urllib3"},
                     timeout=PEER_WAIT, retries=False)
    return r.status, r.data


def _urllib_request(srv, ctx, i):
    req = urllib.request.Request(srv.url(f"/{i}"),
                                 headers={"X-Who": "urllib"})
    with urllib.request.urlopen(req, timeout=PEER_WAIT, context=ctx) as r:
        return r.status, r.read()


def _http_client(srv, ctx, i):
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                          timeout=PEER_WAIT)
    else:
        conn = http.client.HTTPSConnection("localhost", srv.port,
                                           timeout=PEER_WAIT, context=ctx)
    try:
        conn.request("GET", f"/{i}", headers={"X-Who": "http.client"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


WHO = {"requests": "requests", "urllib3": "urllib3",
       "urllib.request": "urllib", "http.client": "http.client"}


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("lib", list(WHO))
def test_100_fetches_overlap(rsched, server, ca, patched, lib, tls):
    ca_pem = ca[1] if tls else None
    cctx = None
    if tls:
        cctx = ssl.create_default_context(cafile=ca_pem)

    def main():
        if lib == "requests":
            fetch = lambda i: _requests(server, ca_pem, i)     # noqa: E731
        elif lib == "urllib3":
            pool = urllib3.PoolManager(maxsize=N, ca_certs=ca_pem) if tls \
                else urllib3.PoolManager(maxsize=N)
            fetch = lambda i: _urllib3(pool, server, i)        # noqa: E731
        elif lib == "urllib.request":
            fetch = lambda i: _urllib_request(server, cctx, i)  # noqa: E731
        else:
            fetch = lambda i: _http_client(server, cctx, i)    # noqa: E731
        jobs = [fibers.spawn(fetch, i) for i in range(N)]
        return [j.join() for j in jobs]

    got = rsched.run(main)
    assert got == [(200, f"/{i} {WHO[lib]}".encode()) for i in range(N)]
    assert server.flight.most == N and not server.flight.gave_up


def test_tls_socket_closed_under_its_file_reads_on(io_sched, ca, patched):
    # urllib.request closes the connection's socket, then reads the body
    # through the response's makefile() file.  As with the stdlib's
    # SSLSocket, the connection must stay readable through the file until
    # the file closes (fibers.ssl's close() used to end it at once: EBADF).
    import socket

    import fibers.ssl
    _, _, sctx = ca
    cctx = ssl.create_default_context(cafile=ca[1])

    closed = fibers.Event()

    def server(sock):
        with sctx.wrap_socket(sock, server_side=True) as t:
            t.sendall(b"head\n")
            closed.wait()               # the body comes after the close
            t.sendall(b"body")
            t.recv(1)                   # until the client's end

    def main():
        a, b = socket.socketpair()
        srv = fibers.spawn(server, b)
        t = cctx.wrap_socket(a, server_hostname="localhost")
        assert isinstance(t, fibers.ssl.TLSSocket)
        f = t.makefile("rb")
        head = f.readline()
        t.close()                       # the file still holds it open
        closed.set()
        body = f.read(4)
        still_open = not t.socket.closed if t.socket is not None else False
        f.close()                       # now it closes, with close_notify
        srv.join()
        return head, body, still_open, t.closed

    assert io_sched.run(main) == (b"head\n", b"body", True, True)
