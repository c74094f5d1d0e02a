"""A thread's default scheduler dies with the thread, even with fibers
parked on I/O (their operations, held by the pump, hold them)."""
import gc
import threading

import fibers
from fibers import net

from iohelp import open_fds


def test_thread_exit_closes_its_scheduler_with_fibers_parked_on_io(
        backend, monkeypatch):
    monkeypatch.setenv("FIBERS_BACKEND", backend)
    log = []
    refs = []

    def thread():
        def reader(sock):
            try:
                sock.recv(10)
            finally:
                log.append("reader finally")

        def main():
            a, b = net.socketpair()
            fibers.spawn(reader, a)
            fibers.spawn(reader, b)
            fibers.yield_now()
            refs.append(fibers.Scheduler.current())
            return fibers.backend()

        log.append(fibers.run(main))

    gc.collect()
    before = open_fds()
    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert log == [backend, "reader finally", "reader finally"]
    # The ring (or epoll set), the waker and both sockets are gone: the
    # scheduler was closed as the thread ended, in that thread.
    s = refs.pop()
    assert "closed" in repr(s) or s.stats()["live"] == 0
    del s
    gc.collect()
    assert open_fds() == before
