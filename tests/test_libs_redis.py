"""redis-py, unmodified, in fibers under fibers.patch(), against a real
redis-server (tests/libservers.py), on both pump backends.

Each client call suspends only its own fiber: 200 fibers share one
client's connection pool; 100 fibers blocked in BLPOP leave a 10 ms
ticker running; a transaction pipeline; pub/sub.  Overlap is shown by
what the server reports (connections the pool had to open, clients it
counts as blocked), and the ticker by ticks counted between events."""
import time

import pytest

import capabilities
import fibers
from libservers import (PEER_WAIT, RedisServer, RedisUnavailable,  # noqa: F401
                        patched, rsched)

redis = capabilities.importorskip(
    "redis", "client_libs", "redis-py (make's TEST_DEPS) is not installed")


@pytest.fixture(scope="module")
def redis_server():
    try:
        server = RedisServer().start()
    except RedisUnavailable as e:
        capabilities.skip("redis_server", str(e))
    yield server
    server.stop()


@pytest.fixture
def rport(redis_server):
    """The server's port, its data flushed before the test."""
    with redis.Redis(port=redis_server.port) as r:     # outside any fiber
        r.flushall()
        r.client_kill_filter(skipme=True, _type="normal")
    return redis_server.port


def wait_for(cond, what, limit=PEER_WAIT):
    """In a fiber: poll cond() every 10 ms (time.sleep, patched) until it
    holds; bounded in count and in time."""
    deadline = time.monotonic() + limit
    for _ in range(int(limit / 0.01)):
        if cond():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# The volume: 200 fibers x 1,000 commands on one client.  redis-py
# costs about 0.2 ms of the client's CPU a command here (measured: 0.2 ms
# in a plain loop with no fibers, 0.15-0.2 ms a command with 200 fibers,
# hiredis or not; the time is redis-py's Python and its send/recv calls),
# so this test takes about 40 s a backend: its hang guard is raised to
# 300 s, five times that, rather than the volume cut.
PER_FIBER = 1000


@pytest.mark.hang_limit(300)
def test_200_fibers_x_1000_commands(rsched, rport, patched):
    fibers_n, per = 200, PER_FIBER

    def worker(r, i):
        for j in range(per):
            k = j % 4
            if k == 0:
                assert r.set(f"k:{i}:{j}", f"{i}.{j}") is True
            elif k == 1:
                assert r.get(f"k:{i}:{j - 1}") == f"{i}.{j - 1}".encode()
            elif k == 2:
                assert r.incr(f"c:{i}") == j // 4 + 1
            else:
                assert r.rpush(f"l:{i}", j) == j // 4 + 1
        return i

    def main():
        r = redis.Redis(port=rport, max_connections=1000)
        jobs = [fibers.spawn(worker, r, i) for i in range(fibers_n)]
        done = [j.join() for j in jobs]
        counts = [int(r.get(f"c:{i}")) for i in range(fibers_n)]
        lists = [r.lrange(f"l:{i}", 0, -1) for i in range(fibers_n)]
        # The pool opens a connection only when every one it has is in
        # use: as many as there are fibers means all were in flight at once.
        clients = len(r.client_list(_type="normal"))
        r.close()
        return done, counts, lists, clients

    done, counts, lists, clients = rsched.run(main)
    assert done == list(range(fibers_n))
    assert counts == [per // 4] * fibers_n
    want = [str(j).encode() for j in range(3, per, 4)]
    assert all(lst == want for lst in lists)
    assert clients == fibers_n


def test_100_fibers_in_blpop_leave_a_10ms_ticker_running(rsched, rport,
                                                         patched):
    n = 100
    ticks = []
    stop = []

    def ticker():
        for _ in range(int(PEER_WAIT / 0.01)):
            if stop:
                return
            time.sleep(0.01)
            ticks.append(time.monotonic())

    def popper(r, i):
        return r.blpop([f"q:{i}"], timeout=PEER_WAIT)

    def main():
        r = redis.Redis(port=rport, max_connections=1000)
        t = fibers.spawn(ticker)
        jobs = [fibers.spawn(popper, r, i) for i in range(n)]
        wait_for(lambda: r.info("clients")["blocked_clients"] == n,
                 f"{n} clients blocked in BLPOP")
        # All n are blocked: the ticker must keep ticking meanwhile.
        first = len(ticks)
        wait_for(lambda: len(ticks) >= first + 50, "50 more ticks")
        during = ticks[first - 1:]
        still = r.info("clients")["blocked_clients"]
        for i in range(n):
            assert r.rpush(f"q:{i}", f"v{i}") == 1
        got = [j.join() for j in jobs]
        # Short BLPOP timeouts expire cooperatively too.
        before = len(ticks)
        expired = [fibers.spawn(r.blpop, [f"empty:{i}"], timeout=1)
                   for i in range(10)]
        timed_out = [j.join() for j in expired]
        ticked = len(ticks) - before
        stop.append(True)
        t.join()
        r.close()
        return got, still, during, timed_out, ticked

    got, still, during, timed_out, ticked = rsched.run(main)
    assert [tuple(g) for g in got] == [(f"q:{i}".encode(), f"v{i}".encode())
                                     for i in range(n)]
    assert still == n                   # nobody left BLPOP during the ticks
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert len(gaps) >= 50
    assert max(gaps) < 0.5              # generous: 10 ms asked
    assert timed_out == [None] * 10
    assert ticked >= 20                 # 1 s of 10 ms ticks, generously


def test_pipelines_from_20_fibers(rsched, rport, patched):
    def worker(r, i):
        with r.pipeline(transaction=True) as p:
            for j in range(100):
                p.set(f"p:{i}:{j}", j)
                p.incr(f"pc:{i}")
            p.mget([f"p:{i}:{j}" for j in range(100)])
            out = p.execute()
        return out

    def main():
        r = redis.Redis(port=rport, max_connections=1000)
        jobs = [fibers.spawn(worker, r, i) for i in range(20)]
        out = [j.join() for j in jobs]
        r.close()
        return out

    for out in rsched.run(main):
        assert out[:-1:2] == [True] * 100
        assert out[1:-1:2] == list(range(1, 101))
        assert out[-1] == [str(j).encode() for j in range(100)]


def test_pubsub_to_10_subscriber_fibers(rsched, rport, patched):
    subs, msgs = 10, 50

    def subscriber(r, ready):
        p = r.pubsub(ignore_subscribe_messages=True)
        p.subscribe("news")
        ready.append(True)
        got = []
        for _ in range(msgs * 2):           # bounded
            m = p.get_message(timeout=PEER_WAIT)
            if m is None:
                continue
            got.append(m["data"])
            if len(got) == msgs:
                break
        p.close()
        return got

    def main():
        r = redis.Redis(port=rport, max_connections=1000)
        ready = []
        jobs = [fibers.spawn(subscriber, r, ready) for _ in range(subs)]
        wait_for(lambda: dict(r.pubsub_numsub("news")).get(b"news") == subs,
                 f"{subs} subscribers")
        delivered = [r.publish("news", f"m{k}") for k in range(msgs)]
        got = [j.join() for j in jobs]
        r.close()
        return delivered, got

    delivered, got = rsched.run(main)
    assert delivered == [subs] * msgs
    assert got == [[f"m{k}".encode() for k in range(msgs)]] * subs
