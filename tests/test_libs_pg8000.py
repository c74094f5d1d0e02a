"""pg8000 (a pure-Python PostgreSQL driver), unmodified, in fibers under
fibers.patch(), against a throwaway PostgreSQL server (tests/pg.py), on
both pump backends.

50 fibers each run ``SELECT pg_sleep(0.2)``: while they sleep, the
server itself lists all 50 as active in pg_stat_activity, and the whole
batch takes far less than the 10 s it would take one at a time."""
import time

import capabilities
import fibers
from libservers import PEER_WAIT, patched, rsched  # noqa: F401

pg8000 = capabilities.importorskip(
    "pg8000", "client_libs", "pg8000 (make's TEST_DEPS) is not installed")

N = 50
NAP = 0.2


def test_50_fibers_in_pg_sleep_at_once(rsched, pg, patched):
    def connect():
        return pg8000.connect(user="postgres", host=pg.host, port=pg.port,
                              database="postgres", timeout=PEER_WAIT)

    def sleeper(conn, i):
        try:
            rows = conn.run("SELECT CAST(:i AS int), pg_sleep(:nap), "
                            "pg_backend_pid() <> 0", i=i, nap=NAP)
            return [list(r) for r in rows]
        finally:
            conn.close()

    def watcher(conn, stop):
        # Most sessions the server saw running our pg_sleep at once.
        most = 0
        for _ in range(int(PEER_WAIT / 0.01)):          # bounded
            if stop:
                break
            (n,), = conn.run("SELECT count(*) FROM pg_stat_activity WHERE "
                             "state = 'active' AND pid <> "
                             "pg_backend_pid() AND query LIKE '%pg_sleep%'")
            most = max(most, n)
            if most == N:
                break
            time.sleep(0.005)
        return most

    def main():
        obs = connect()
        # pg_stat_activity is a snapshot per transaction: a fresh one each.
        obs.autocommit = True
        stop = []
        w = fibers.spawn(watcher, obs, stop)
        # Connecting (start-up, authentication) takes the server longer
        # than the nap: connect all first, concurrently, then nap.
        conns = [fibers.spawn(connect) for _ in range(N)]
        conns = [c.join() for c in conns]
        t0 = time.monotonic()
        jobs = [fibers.spawn(sleeper, c, i) for i, c in enumerate(conns)]
        rows = [j.join() for j in jobs]
        took = time.monotonic() - t0
        stop.append(True)
        most = w.join()
        obs.close()
        return rows, most, took

    rows, most, took = rsched.run(main)
    assert rows == [[[i, "", True]] for i in range(N)]
    assert most == N
    # One at a time it is N x NAP = 10 s; a quarter of that is generous.
    assert took < N * NAP / 4
