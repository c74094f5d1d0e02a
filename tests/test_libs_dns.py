"""dnspython, unmodified, in fibers under fibers.patch(), against a DNS
responder on loopback written with dnspython's message API
(tests/libservers.py's DNSServer, UDP and TCP, in threads), on both pump
backends.

The responder holds each answer until all the queries are waiting at
once (bounded): they can only all be answered if the fibers' queries
overlapped.  Every answer is checked against the name asked."""
import pytest

import capabilities
import fibers
from libservers import (PEER_WAIT, DNSServer, address_for,  # noqa: F401
                        patched, rsched)

dns = capabilities.importorskip(
    "dns", "client_libs", "dnspython (make's TEST_DEPS) is not installed")
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.resolver  # noqa: E402

N = 50


@pytest.fixture
def dns_server():
    srv = DNSServer(N)
    yield srv
    srv.stop()


def _answer(resp):
    return [r.address for rrset in resp.answer for r in rrset]


@pytest.mark.parametrize("how", ["udp", "tcp", "resolver"])
def test_50_queries_overlap(rsched, dns_server, patched, how):
    port = dns_server.port

    def ask(i):
        name = f"h{i}.test."
        if how == "resolver":
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = ["127.0.0.1"]
            res.port = port
            res.timeout = res.lifetime = PEER_WAIT
            return [r.address for r in res.resolve(name, "A")]
        q = dns.message.make_query(name, "A")
        if how == "udp":
            resp = dns.query.udp(q, "127.0.0.1", port=port,
                                 timeout=PEER_WAIT)
        else:
            resp = dns.query.tcp(q, "127.0.0.1", port=port,
                                 timeout=PEER_WAIT)
        assert resp.rcode() == dns.rcode.NOERROR
        return _answer(resp)

    def main():
        jobs = [fibers.spawn(ask, i) for i in range(N)]
        return [j.join() for j in jobs]

    assert rsched.run(main) == [[address_for(f"h{i}.test.")]
                                for i in range(N)]
    assert dns_server.flight.most == N and not dns_server.flight.gave_up
    assert dns_server.queries == N


def test_nxdomain_reaches_the_fiber(rsched, patched):
    srv = DNSServer(1)
    try:
        def main():
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = ["127.0.0.1"]
            res.port = srv.port
            res.timeout = res.lifetime = PEER_WAIT
            with pytest.raises(dns.resolver.NXDOMAIN):
                res.resolve("nothing.example.", "A")
            return True
        assert rsched.run(main) is True
    finally:
        srv.stop()
