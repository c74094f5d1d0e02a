"""fibers.psycopg against a real PostgreSQL server (tests/pg.py), on both
pump backends.

These run on the real clock: the server's time is real.  Margins are wide
(this machine is shared), but every one is far below what a blocking wait
would take.
"""
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import capabilities
import fibers

psycopg = capabilities.importorskip("psycopg", "psycopg")
import fibers.psycopg as fpg  # noqa: E402
from psycopg import errors as pgerr  # noqa: E402
from psycopg import pq  # noqa: E402

IDLE = pq.TransactionStatus.IDLE
INERROR = pq.TransactionStatus.INERROR


@pytest.fixture
def rsched(backend):
    """A scheduler on the given backend, on the real clock."""
    s = fibers.Scheduler(backend=backend)
    yield s
    s.close()


def run(sched, fn, *args):
    return sched.run(fn, *args)


def unique(name):
    return f"{name}_{os.getpid()}_{time.monotonic_ns()}"


# ---- concurrency ---------------------------------------------------------------

def test_fifty_sleeping_queries_overlap_and_a_ticker_stays_on_time(rsched, pg):
    n, nap = 50, 0.2
    gaps = []
    spans = []
    connected = []
    go = "psycopg-go"

    def ticker(until):
        last = time.monotonic()
        for _ in range(2000):                   # bounded: 20 s at most
            if time.monotonic() >= until[0]:
                return
            fibers.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    def worker():
        with fpg.connect(pg.conninfo, autocommit=True) as conn:
            connected.append(conn)
            if len(connected) == n:
                fibers.signal_all(go)
            else:
                fibers.wait_signal(go, timeout=30)
            t0 = time.monotonic()
            conn.execute("SELECT pg_sleep(%s)", (nap,))
            spans.append((t0, time.monotonic()))

    def main():
        workers = [fibers.spawn(worker) for _ in range(n)]
        fibers.wait_for(lambda: len(connected) == n, timeout=30)
        until = [float("inf")]
        tick = fibers.spawn(ticker, until)
        t0 = time.monotonic()
        for w in workers:
            w.join(timeout=30)
        elapsed = time.monotonic() - t0
        until[0] = 0
        tick.join(timeout=5)
        return elapsed

    elapsed = run(rsched, main)
    assert len(spans) == n
    # Serially this is n * nap = 10 s.
    assert nap <= elapsed < 2.5, elapsed
    # They overlapped: every query had started before the first one ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    assert gaps and max(gaps) < 0.15, max(gaps)


def test_fibers_sharing_one_connection_take_turns(rsched, pg):
    # psycopg's connection lock is a thread lock; a fiber finding it taken
    # must park, not freeze the thread (the holder could never release it).
    def main():
        with fpg.connect(pg.conninfo, autocommit=True) as conn:
            def q(i):
                return conn.execute("SELECT %s::int, pg_sleep(0.1)",
                                    (i,)).fetchone()[0]
            t0 = time.monotonic()
            fs = [fibers.spawn(q, i) for i in range(3)]
            got = sorted(f.join(timeout=10) for f in fs)
            return got, time.monotonic() - t0

    got, elapsed = run(rsched, main)
    assert got == [0, 1, 2]
    assert 0.3 <= elapsed < 3.0       # one at a time on one connection


# ---- the API -------------------------------------------------------------------

def test_query_commit_rollback_executemany_fetch(rsched, pg):
    table = unique("t")

    def main():
        with fpg.connect(pg.conninfo) as conn, \
                fpg.connect(pg.conninfo, autocommit=True) as other:
            assert isinstance(conn, fpg.Connection)
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
            conn.commit()
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)",
                                [(i, f"v{i}") for i in range(100)])
                assert other.execute(f"SELECT count(*) FROM {table}"
                                     ).fetchone() == (0,)
                conn.commit()
                assert other.execute(f"SELECT count(*) FROM {table}"
                                     ).fetchone() == (100,)
                cur.execute(f"DELETE FROM {table} WHERE id >= 50")
                assert cur.rowcount == 50
                conn.rollback()
                cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
                assert cur.fetchone() == (0, "v0")
                assert cur.fetchmany(2) == [(1, "v1"), (2, "v2")]
                assert len(cur.fetchall()) == 97
                # Iteration and a server-side cursor.
                cur.execute(f"SELECT id FROM {table} WHERE id < 5 ORDER BY id")
                assert [r[0] for r in cur] == [0, 1, 2, 3, 4]
            with conn.cursor(name="named") as scur:
                scur.itersize = 7
                scur.execute(f"SELECT id FROM {table} ORDER BY id")
                assert sum(1 for _ in scur) == 100
            conn.commit()                   # so the block below commits
            with conn.transaction():
                conn.execute(f"UPDATE {table} SET v = 'x' WHERE id = 1")
            assert other.execute(f"SELECT v FROM {table} WHERE id = 1"
                                 ).fetchone() == ("x",)
            with conn.pipeline():
                for i in range(100, 110):
                    conn.execute(f"INSERT INTO {table} VALUES (%s, 'p')", (i,))
            conn.commit()
            assert [r[0] for r in conn.cursor().stream(
                f"SELECT id FROM {table} WHERE v = 'p' ORDER BY id")] == \
                list(range(100, 110))
            conn.execute(f"DROP TABLE {table}")
            conn.commit()

    run(rsched, main)


def test_query_error_raises_psycopg_error_and_rollback_recovers(rsched, pg):
    def main():
        with fpg.connect(pg.conninfo) as conn:
            with pytest.raises(pgerr.DivisionByZero):
                conn.execute("SELECT 1 / 0")
            assert conn.info.transaction_status == INERROR
            with pytest.raises(pgerr.InFailedSqlTransaction):
                conn.execute("SELECT 1")
            conn.rollback()
            assert conn.execute("SELECT 2").fetchone() == (2,)
            with pytest.raises(pgerr.UndefinedTable):
                conn.execute("SELECT * FROM no_such_table_here")
            conn.rollback()
            assert conn.execute("SELECT 3").fetchone() == (3,)

    run(rsched, main)


def test_unix_socket(rsched, pg):
    def main():
        with fpg.connect(pg.unix_conninfo) as conn:
            return conn.execute("SELECT current_setting('port')").fetchone()

    assert run(rsched, main) == (str(pg.port),)


def test_copy_in_and_out_big(rsched, pg):
    # Megabytes each way: libpq's send buffer fills, so the waits for
    # "readable or writable" are exercised too.
    table = unique("c")
    rows = 200_000

    def main():
        with fpg.connect(pg.conninfo) as conn:
            conn.execute(f"CREATE TEMP TABLE {table} (id int, pad text)")
            pad = "x" * 40
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for i in range(rows):
                    copy.write_row((i, pad))
            got = 0
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                for _ in copy.rows():
                    got += 1
            return got

    assert run(rsched, main) == rows


def test_big_query_and_pipeline(rsched, pg):
    # A 32 MiB parameter fills libpq's send buffer: psycopg then waits for
    # "readable or writable" (so that it can read what the server sends
    # meanwhile); the pipeline does too.
    def main():
        with fpg.connect(pg.conninfo) as conn:
            big = "y" * (32 << 20)
            assert conn.execute("SELECT length(%s)", (big,)).fetchone() == \
                (len(big),)
            with conn.pipeline():
                curs = [conn.execute("SELECT %s::int, %s::text",
                                     (i, "z" * 1000)) for i in range(2000)]
            return [c.fetchone()[0] for c in curs]

    assert run(rsched, main) == list(range(2000))


def test_cancel_from_another_fiber(rsched, pg):
    def main():
        with fpg.connect(pg.conninfo, autocommit=True) as conn:
            for cancel in (conn.cancel_safe, conn.cancel):
                f = fibers.spawn(conn.execute, "SELECT pg_sleep(30)")
                fibers.sleep(0.2)
                t0 = time.monotonic()
                cancel()
                with pytest.raises(pgerr.QueryCanceled):
                    f.join(timeout=10)
                assert time.monotonic() - t0 < 2.0
                assert conn.execute("SELECT 1").fetchone() == (1,)

    run(rsched, main)


def test_notifies(rsched, pg):
    channel = unique("ch")
    listening = []

    def listener(conn):
        conn.execute(f"LISTEN {channel}")
        listening.append(True)
        # From here nothing yields until notifies() parks, waiting for the
        # server.  Its limit never expires here: only the notifications
        # can end that wait.
        return [n.payload for n in conn.notifies(timeout=3600,
                                                 stop_after=2)]

    def main():
        with fpg.connect(pg.conninfo, autocommit=True) as a, \
                fpg.connect(pg.conninfo, autocommit=True) as b:
            f = fibers.spawn(listener, a)
            # LISTEN done, and the listener parked in notifies(): the
            # NOTIFYs must wake it, not be found waiting by it.
            fibers.wait_for(lambda: listening and f.state == "suspended",
                            timeout=10)
            b.execute(f"NOTIFY {channel}, 'one'")
            b.execute(f"NOTIFY {channel}, 'two'")
            try:
                got = f.join(timeout=10)
            finally:
                f.kill()        # a listener never woken fails, not hangs
            # A timeout with nothing to receive returns, promptly.
            t0 = time.monotonic()
            assert list(a.notifies(timeout=0.2)) == []
            return got, time.monotonic() - t0

    got, waited = run(rsched, main)
    assert got == ["one", "two"]
    assert 0.15 <= waited < 2.0


# ---- connect failures ----------------------------------------------------------

def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]       # nothing listens once it is closed


def test_connect_to_a_closed_port_raises_operational_error(rsched):
    port = closed_port()

    def main():
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            fpg.connect(f"host=127.0.0.1 port={port} user=x dbname=x "
                        f"connect_timeout=5")
        return time.monotonic() - t0

    assert run(rsched, main) < 2.0


def test_connect_timeout_raises_operational_error_while_others_run(rsched):
    # A listener that never accepts: the kernel completes the handshake,
    # and the server's answer never comes.
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    port = lst.getsockname()[1]
    ticks = []

    def ticker():
        for _ in range(1000):               # bounded: 10 s
            fibers.sleep(0.01)
            ticks.append(time.monotonic())

    def main():
        tick = fibers.spawn(ticker)
        t0 = time.monotonic()
        try:
            with pytest.raises(psycopg.OperationalError) as info:
                fpg.connect(f"host=127.0.0.1 port={port} user=x dbname=x "
                            f"connect_timeout=2")
            return time.monotonic() - t0, info.value
        finally:
            tick.kill()

    try:
        elapsed, exc = run(rsched, main)
    finally:
        lst.close()
    assert isinstance(exc, pgerr.ConnectionTimeout)
    assert 1.9 <= elapsed < 4.0, elapsed
    assert len(ticks) > 50                  # the other fiber ran meanwhile


# ---- interruption ----------------------------------------------------------------

def backend_state(other, pid):
    return other.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                         (pid,)).fetchone()[0]


@pytest.mark.parametrize("autocommit", [False, True])
def test_timeout_during_a_long_query_cancels_it(rsched, pg, autocommit):
    def main():
        with fpg.connect(pg.conninfo, autocommit=autocommit) as conn, \
                fpg.connect(pg.conninfo, autocommit=True) as other:
            pid = conn.info.backend_pid
            t0 = time.monotonic()
            with pytest.raises(fibers.Timeout):
                with fibers.timeout(0.3):
                    conn.execute("SELECT pg_sleep(30)")
            elapsed = time.monotonic() - t0
            # Defined state: cancelled, not closed, nothing left running.
            assert not conn.closed
            assert conn.info.transaction_status == \
                (IDLE if autocommit else INERROR)
            assert backend_state(other, pid) != "active"
            if not autocommit:
                conn.rollback()
            assert conn.execute("SELECT 7").fetchone() == (7,)
            return elapsed

    assert 0.29 <= run(rsched, main) < 2.0


def test_killed_fiber_cancels_its_query(rsched, pg):
    started = []

    def victim(conn):
        started.append(True)
        conn.execute("SELECT pg_sleep(30)")

    def main():
        with fpg.connect(pg.conninfo) as conn, \
                fpg.connect(pg.conninfo, autocommit=True) as other:
            f = fibers.spawn(victim, conn)
            fibers.wait_for(lambda: started, timeout=5)
            fibers.sleep(0.2)
            assert backend_state(other, conn.info.backend_pid) == "active"
            t0 = time.monotonic()
            f.kill()                        # waits until it is dead
            killed_in = time.monotonic() - t0
            assert f.dead
            assert not conn.closed
            assert conn.info.transaction_status == INERROR
            assert backend_state(other, conn.info.backend_pid) != "active"
            conn.rollback()
            assert conn.execute("SELECT 8").fetchone() == (8,)
            return killed_in

    assert run(rsched, main) < 2.0


def test_killed_while_nothing_is_in_flight_leaves_the_connection_alone(
        rsched, pg):
    def listen(conn):
        conn.execute("LISTEN nothing_ever")
        for _ in conn.notifies():
            pass

    def main():
        with fpg.connect(pg.conninfo, autocommit=True) as conn:
            f = fibers.spawn(listen, conn)
            fibers.sleep(0.2)
            f.kill()
            assert not conn.closed
            assert conn.info.transaction_status == IDLE
            return conn.execute("SELECT 9").fetchone()

    assert run(rsched, main) == (9,)


def test_scheduler_closed_with_a_query_in_flight(backend, pg):
    # close() kills the fiber mid-query: the query is cancelled there and
    # then, and close() returns promptly.
    sched = fibers.Scheduler(backend=backend)
    box = []

    def worker():
        conn = fpg.connect(pg.conninfo)
        box.append(conn)
        conn.execute("SELECT pg_sleep(30)")

    def main():
        fibers.spawn(worker)
        fibers.wait_for(lambda: box, timeout=10)
        fibers.sleep(0.2)

    try:
        sched.run(main)
        t0 = time.monotonic()
    finally:
        sched.close()
    assert time.monotonic() - t0 < 5.0
    conn = box[0]
    try:
        assert not conn.closed
        assert conn.info.transaction_status == INERROR
        with fpg.connect(pg.conninfo, autocommit=True) as other:
            assert backend_state(other, conn.info.backend_pid) != "active"
    finally:
        conn.close()


def test_interrupted_again_while_cancelling_closes_the_connection(rsched, pg):
    # A second interruption during the cancel: no time to finish cleanly, so
    # the connection is closed, never left looking usable.
    started = []

    class Second(Exception):
        pass

    def victim(conn):
        started.append(True)
        conn.execute("SELECT pg_sleep(30)")

    def main():
        with fpg.connect(pg.conninfo) as conn, \
                fpg.connect(pg.conninfo, autocommit=True) as other:
            pid = conn.info.backend_pid
            f = fibers.spawn(victim, conn)
            fibers.wait_for(lambda: started, timeout=5)
            fibers.sleep(0.1)
            f.kill(block=False)
            fibers.yield_now()              # the victim starts cancelling
            f.kill(Second("again"), block=False)
            with pytest.raises(Second):
                f.join(timeout=10)
            assert conn.closed
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
            # The server side of it is gone too (or going).
            for _ in range(100):
                if other.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE pid = %s AND state = 'active'",
                                 (pid,)).fetchone() == (0,):
                    break
                fibers.sleep(0.05)
            else:
                raise AssertionError("the query still runs on the server")

    run(rsched, main)


def test_server_killed_mid_query_raises_operational_error(rsched, pg):
    def main():
        conn = fpg.connect(pg.conninfo)
        f = fibers.spawn(conn.execute, "SELECT pg_sleep(30)")
        fibers.sleep(0.2)
        t0 = time.monotonic()
        pg.kill()
        with pytest.raises(psycopg.OperationalError):
            f.join(timeout=10)
        conn.close()
        return time.monotonic() - t0

    try:
        assert run(rsched, main) < 5.0
    finally:
        pg.start()
    assert pg.running


# ---- outside a fiber -----------------------------------------------------------

def test_outside_a_fiber_drives_the_scheduler(backend, pg):
    code = textwrap.dedent("""
        import sys, time
        import fibers, fibers.psycopg
        ticks = []
        def ticker():
            for _ in range(1000):
                fibers.sleep(0.01)
                ticks.append(1)
        fibers.spawn(ticker)
        conn = fibers.psycopg.connect(sys.argv[1])
        assert type(conn) is fibers.psycopg.Connection
        before = len(ticks)
        print(conn.execute("SELECT 40 + 2, pg_sleep(0.3)").fetchone()[0])
        print("ticked", len(ticks) - before >= 10)
        conn.commit()
        with fibers.psycopg.Connection.connect(sys.argv[1]) as c2:
            print(c2.execute("SELECT 'ok'").fetchone()[0])
        conn.close()
    """)
    env = dict(os.environ, FIBERS_BACKEND=backend)
    r = subprocess.run([sys.executable, "-c", code, pg.conninfo], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["42", "ticked", "True", "ok"], r.stdout
