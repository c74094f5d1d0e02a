"""The pytest plugin (fibers/pytest_plugin.py), run through pytest's own
pytester: each test writes a test file, runs pytest on it and reads the
outcome and the report.

Most runs are in-process (runpytest): the plugin comes in through its
pytest11 entry point, as in any project that installs fibers.  The runs
that must show exactly that, or that set the environment, are in a
subprocess (runpytest_subprocess).
"""
import pytest

from iohelp import skip_unless_backend_runs

pytest_plugins = ["pytester"]


@pytest.fixture
def run(pytester):
    """Write `src` as test_it.py, run pytest on it (extra `args`), return
    the result."""
    def go(src, *args, subprocess=False):
        pytester.makepyfile(test_it=src)
        if subprocess:
            return pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                                 *args)
        return pytester.runpytest("-p", "no:cacheprovider", *args)
    return go


# ---- the marker --------------------------------------------------------------

def test_a_marked_test_runs_as_a_fiber_of_the_fixtures_scheduler(run):
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers
        def test_inside(fibers_scheduler, fibers_clock):
            assert fibers.in_fiber()
            assert fibers.current().name == "test_inside"
            assert fibers.Scheduler.current() is fibers_scheduler
            assert fibers_scheduler.clock is fibers_clock
            assert isinstance(fibers_clock, fibers.VirtualClock)
            assert fibers_clock.autojump
            child = fibers.spawn(lambda: 6 * 7)
            assert child.join() == 42

        def test_unmarked_is_not_a_fiber():
            import fibers
            assert not fibers.in_fiber()
    """)
    r.assert_outcomes(passed=2)


def test_a_failing_assertion_fails_the_test_at_its_line(run):
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers
        def test_wrong():
            fibers.sleep(1)
            total = 1 + 1
            assert total == 3
    """)
    r.assert_outcomes(failed=1)
    # pytest's assertion rewriting and its traceback, cut at the test.
    r.stdout.fnmatch_lines(["*def test_wrong():*", ">*assert total == 3",
                            "E*assert 2 == 3", "test_it.py:7: AssertionError"])
    r.stdout.no_fnmatch_line("*pytest_plugin.py*")


def test_an_exception_in_a_child_fiber_fails_the_test(run):
    r = run("""
        import fibers, pytest

        def worker():
            fibers.sleep(2)
            raise KeyError("lost in the worker")

        @pytest.mark.fibers
        def test_child():
            w = fibers.spawn(worker)
            w.name = "the-worker"
            fibers.sleep(10)
            assert w.dead           # the test itself passes
    """)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*ExceptionGroup: 1 fiber of test_child raised and nobody joined it:"
        " 'the-worker' (KeyError)*",
        "*line 5, in worker",
        "*KeyError: 'lost in the worker'",
        "*raised in fiber 'the-worker', which nobody joined",
    ])


def test_the_tests_failure_and_its_fibers_are_reported_together(run):
    r = run("""
        import fibers, pytest

        def worker(n):
            raise ValueError(f"worker {n}")

        @pytest.mark.fibers
        def test_both():
            for n in range(2):
                fibers.spawn(worker, n).name = f"w{n}"
            fibers.sleep(1)
            assert False, "the test's own"
    """)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*ExceptionGroup: test_both raised AssertionError, and 2 fibers of "
        "the test raised too: 'w0' (ValueError), 'w1' (ValueError)*",
        "*AssertionError: the test's own*",
        "*ValueError: worker 0", "*raised in fiber 'w0', which nobody joined",
        "*ValueError: worker 1", "*raised in fiber 'w1', which nobody joined",
    ])


def test_a_failure_someone_joined_is_not_the_tests(run):
    r = run("""
        import fibers, pytest

        def worker():
            fibers.sleep(1)
            raise KeyError("expected")

        @pytest.mark.fibers
        def test_joined():
            w = fibers.spawn(worker)
            with pytest.raises(KeyError):
                w.join()

        @pytest.mark.fibers
        def test_killed():
            w = fibers.spawn(fibers.sleep, 100)
            fibers.yield_now()
            w.kill()
            v = fibers.spawn(fibers.sleep, 100)
            fibers.yield_now()
            v.kill(OSError("told to stop"))
    """)
    r.assert_outcomes(passed=2)


def test_errors_log_opts_out_and_the_failure_is_logged(run):
    r = run("""
        import logging
        import fibers, pytest

        def worker():
            raise KeyError("only logged")

        @pytest.mark.fibers(errors="log")
        def test_logged(caplog, fibers_scheduler):
            assert fibers_scheduler.on_fiber_error is None
            fibers.spawn(worker)
            fibers.sleep(1)
            [rec] = caplog.records
            assert rec.name == "fibers" and rec.levelno == logging.ERROR
            assert rec.exc_info[0] is KeyError
    """)
    r.assert_outcomes(passed=1)


def test_virtual_time_an_hour_passes_at_once(run):
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers
        def test_an_hour(fibers_clock):
            fibers.sleep(3600)
            assert fibers_clock.now() == 3600.0
            assert fibers.now() == 3600.0

        @pytest.mark.fibers
        def test_each_test_starts_at_zero(fibers_clock):
            assert fibers_clock.now() == 0.0
            with fibers.move_on_after(5) as scope:
                fibers.sleep(86400)
            assert scope.expired and fibers.now() == 5.0
    """, "-p", "no:randomly")
    r.assert_outcomes(passed=2)


def test_autojump_false_moves_only_when_advanced(run):
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers(autojump=False)
        def test_advanced_by_hand(fibers_clock):
            assert not fibers_clock.autojump
            woke = []
            fibers.spawn(lambda: (fibers.sleep(5), woke.append(fibers.now())))
            fibers.yield_now()
            fibers_clock.advance(4.999)
            fibers.yield_now(); fibers.yield_now()
            assert woke == []
            fibers_clock.advance(0.001)
            fibers.yield_now(); fibers.yield_now()
            assert woke == [5.0]

        @pytest.mark.fibers(autojump=False)
        def test_sleeping_with_nobody_to_advance():
            fibers.sleep(1)
    """)
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*RuntimeError: every fiber is waiting for a "
                            "timer, but the VirtualClock only moves when "
                            "advanced*"])


def test_pytest_outcomes_inside_pass_through(run):
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers
        def test_skips():
            fibers.sleep(1)
            pytest.skip("not today")

        @pytest.mark.fibers
        def test_xfails():
            pytest.xfail("known")

        @pytest.mark.fibers
        @pytest.mark.xfail(raises=ZeroDivisionError, strict=True)
        def test_expected_failure():
            fibers.sleep(1)
            1 / 0

        @pytest.mark.fibers
        def test_fails():
            pytest.fail("said so")
    """, "-rsx")
    r.assert_outcomes(skipped=1, xfailed=2, failed=1)
    r.stdout.fnmatch_lines(["*Failed: said so", "SKIPPED * not today"])


def test_parametrized_and_fixture_arguments(run):
    r = run("""
        import fibers, pytest

        @pytest.fixture
        def base():
            return 10

        @pytest.mark.fibers
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_args(base, n, tmp_path):
            fibers.sleep(n)
            assert fibers.now() == n
            assert fibers.current().name == f"test_args[{n}]"
            assert base == 10 and tmp_path.is_dir()
    """)
    r.assert_outcomes(passed=3)


def test_module_and_class_marks_and_their_options_merge(run):
    r = run("""
        import fibers, pytest

        pytestmark = pytest.mark.fibers(autojump=False)

        def test_module_marked(fibers_clock):
            assert fibers.in_fiber() and not fibers_clock.autojump

        @pytest.mark.fibers(autojump=True)
        def test_closest_option_wins(fibers_clock):
            assert fibers_clock.autojump
            fibers.sleep(7)

        class TestGroup:
            def test_method(self, fibers_scheduler):
                assert fibers.Scheduler.current() is fibers_scheduler

            @staticmethod
            def test_static(fibers_clock):
                assert fibers.in_fiber() and not fibers_clock.autojump
    """)
    r.assert_outcomes(passed=4)


def test_a_mark_added_after_collection_works_too(pytester, run):
    # The marker is usually seen at collection, where the plugin makes the
    # test use fibers_scheduler; a hook may add it later.
    pytester.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                item.add_marker(pytest.mark.fibers)
    """)
    r = run("""
        import fibers

        def test_marked_late():
            assert fibers.in_fiber()
            fibers.sleep(30)
            assert fibers.now() == 30.0
    """)
    r.assert_outcomes(passed=1)


def test_a_marked_test_that_returns_a_value_warns(run):
    r = run("""
        import pytest

        @pytest.mark.fibers
        def test_returns():
            return 5
    """)
    r.assert_outcomes(passed=1, warnings=1)
    r.stdout.fnmatch_lines(["*PytestReturnNotNoneWarning: Test functions "
                            "should return None, but test_returns returned "
                            "<class 'int'>*"])


# ---- what a fibers test cannot be ----------------------------------------------

def test_async_and_generator_tests_are_refused_in_one_line(run):
    r = run("""
        import pytest

        @pytest.mark.fibers
        async def test_coroutine():
            pass

        @pytest.mark.fibers
        async def test_async_generator():
            yield

        @pytest.mark.fibers
        def test_generator():
            yield 1

        def test_others_still_collected():
            pass
    """)
    r.assert_outcomes(passed=1, failed=3)
    for name, kind in (("test_coroutine", "an async def function"),
                       ("test_async_generator", "an async generator function"),
                       ("test_generator", "a generator function")):
        r.stdout.fnmatch_lines([
            f"@pytest.mark.fibers: {name} is {kind}; a fibers test is a "
            f"plain def, run as a fiber (call fibers' blocking words "
            f"directly, no await or yield)"])


@pytest.mark.parametrize("mark, message", [
    ("fibers(leaks='sometimes')",
     "ValueError: @pytest.mark.fibers: leaks must be one of 'fail', "
     "'ignore', got 'sometimes'"),
    ("fibers(errors='ignore')",
     "ValueError: @pytest.mark.fibers: errors must be one of 'fail', "
     "'log', got 'ignore'"),
    ("fibers(autojump=1)",
     "TypeError: @pytest.mark.fibers: autojump must be True or False, "
     "got 1"),
    ("fibers(timeout=3)",
     "TypeError: @pytest.mark.fibers: unknown option(s) timeout (known: "
     "backend, autojump, leaks, errors)"),
    ("fibers('epoll')",
     "TypeError: @pytest.mark.fibers takes keyword options only, got "
     "('epoll',)"),
    ("fibers(backend='kqueue')", "ValueError: *kqueue*"),
])
def test_bad_marker_options_are_clear_errors(run, mark, message):
    r = run(f"""
        import pytest

        @pytest.mark.{mark}
        def test_x():
            pass
    """)
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines([f"E   {message}"])


# ---- the fixtures --------------------------------------------------------------

def test_the_fixtures_in_an_unmarked_test(run):
    r = run("""
        import fibers, pytest

        ended = []

        def test_drive_it(fibers_scheduler, fibers_clock):
            assert fibers_scheduler.clock is fibers_clock
            assert fibers_clock.autojump and fibers_clock.now() == 0.0
            def main():
                fibers.sleep(60)
                return fibers.now()
            assert fibers_scheduler.run(main) == 60.0
            assert fibers_clock.now() == 60.0
            def stays():
                try:
                    fibers.sleep(1000)
                finally:
                    ended.append(fibers.now())
            fibers_scheduler.spawn(stays)
            fibers_scheduler.step()       # it parks in its sleep

        def test_the_scheduler_was_closed_after():
            # close() killed the sleeper: its finally ran, at time 60.
            assert ended == [60.0]

        def test_fresh_each_time(fibers_clock, fibers_scheduler):
            assert fibers_clock.now() == 0.0
            assert fibers_scheduler.stats()["spawned"] == 0
    """, "-p", "no:randomly")
    r.assert_outcomes(passed=3)


def test_a_fixture_may_spawn_on_the_tests_scheduler(run):
    r = run("""
        import fibers, pytest

        @pytest.fixture
        def ticker(fibers_scheduler):
            ticks = []
            t = fibers_scheduler.spawn(
                lambda: [(fibers.sleep(1), ticks.append(fibers.now()))
                         for _ in range(3)])
            t.name = "ticker"
            yield ticks

        @pytest.mark.fibers
        def test_uses_it(ticker):
            fibers.sleep(10)
            assert ticker == [1.0, 2.0, 3.0]
    """)
    r.assert_outcomes(passed=1)


# ---- backends ------------------------------------------------------------------

def test_the_marker_picks_the_backend(run, backend):
    r = run(f"""
        import fibers, fibers.net, pytest

        @pytest.mark.fibers(backend={backend!r})
        def test_on_it(fibers_scheduler):
            assert fibers_scheduler.backend == {backend!r}
            a, b = fibers.net.socketpair()
            with a, b:
                reader = fibers.spawn(b.recv, 5)
                a.sendall(b"hello")
                assert reader.join() == b"hello"
    """)
    r.assert_outcomes(passed=1)


def test_a_parametrized_fibers_backend_runs_each_test_on_each(pytester, run):
    skip_unless_backend_runs("io_uring")
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(params=["io_uring", "epoll"])
        def fibers_backend(request):
            return request.param
    """)
    r = run("""
        import fibers, fibers.net, pytest

        seen = []

        @pytest.mark.fibers
        def test_io(fibers_scheduler, fibers_backend):
            assert fibers_scheduler.backend == fibers_backend
            a, b = fibers.net.socketpair()
            with a, b:
                fibers.spawn(a.sendall, b"x" * 3)
                assert b.recv(3) == b"xxx"
            seen.append(fibers_backend)

        @pytest.mark.fibers
        def test_without_asking(fibers_scheduler):
            # fibers_backend is parametrized: the marked test runs on each
            # although it never names it.
            seen.append(fibers_scheduler.backend)

        def test_seen():
            assert sorted(seen) == ["epoll", "epoll", "io_uring", "io_uring"]
    """, "-v", "-p", "no:randomly")
    r.assert_outcomes(passed=5)
    r.stdout.fnmatch_lines(["*test_io[[]io_uring[]] PASSED*",
                            "*test_io[[]epoll[]] PASSED*",
                            "*test_without_asking[[]io_uring[]] PASSED*",
                            "*test_without_asking[[]epoll[]] PASSED*"])


def test_without_a_choice_the_backend_is_fibers_default(run, backend,
                                                       monkeypatch):
    monkeypatch.setenv("FIBERS_BACKEND", backend)
    r = run(f"""
        import pytest

        @pytest.mark.fibers
        def test_default(fibers_scheduler, fibers_backend):
            assert fibers_backend is None
            assert fibers_scheduler.backend == {backend!r}
    """)
    r.assert_outcomes(passed=1)


# ---- the entry point -----------------------------------------------------------

def test_installed_as_a_pytest11_entry_point(run, pytester):
    # A fresh interpreter, no -p, no conftest: pytest finds the plugin
    # through the package's entry point; --strict-markers knows the marker.
    r = run("""
        import fibers, pytest

        @pytest.mark.fibers
        def test_marked(fibers_clock):
            fibers.sleep(3600)
            assert fibers_clock.now() == 3600.0
    """, "--strict-markers", subprocess=True)
    r.assert_outcomes(passed=1)
    r = pytester.runpytest_subprocess("--markers")
    r.stdout.fnmatch_lines(["@pytest.mark.fibers(backend=None, "
                            "autojump=True, leaks='fail', errors='fail'): *"])
    r = pytester.runpytest_subprocess("-p", "no:fibers", "--strict-markers")
    r.stdout.fnmatch_lines(["*'fibers' not found in `markers` "
                            "configuration option*"])


# ---- the project's own suite -----------------------------------------------------

@pytest.mark.fibers
def test_here_a_marked_test_runs_on_the_backend_fixtures_choice(
        backend, fibers_scheduler, fibers_backend):
    # tests/conftest.py's fibers_backend follows the `backend` fixture.
    assert fibers_backend == backend
    assert fibers_scheduler.backend == backend
    import fibers
    assert fibers.Scheduler.current() is fibers_scheduler


# ---- fibers left alive ---------------------------------------------------------

def test_a_fiber_left_alive_fails_the_test_naming_it_and_its_stack(run):
    r = run("""
        import fibers, pytest

        def serve_forever():
            fibers.wait_signal("never")

        @pytest.mark.fibers
        def test_leaky():
            fibers.spawn(serve_forever).name = "the-server"
            fibers.spawn(fibers.sleep, 100).name = "the-sleeper"
            fibers.yield_now()
            fibers.spawn(print).name = "never-started"
    """)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "3 fibers still alive at the end of test_leaky: 'the-server', "
        "'the-sleeper', 'never-started'",
        "(join them, kill them, or mark the test "
        "@pytest.mark.fibers(leaks=\"ignore\"))",
        "Fiber * 'the-server' suspended, age *, waiting on signal 'never'",
        '  File "*test_it.py", line 4, in serve_forever',
        "    fibers.wait_signal(\"never\")",
        "Fiber * 'the-sleeper' suspended, age *, waiting on sleep until "
        "100.000*",
        "Fiber * 'never-started' ready, age *",
        "  (not started yet)",
    ])


def test_leaks_ignore_opts_out_and_close_kills_them(run):
    r = run("""
        import fibers, pytest

        ended = []

        def server():
            try:
                fibers.wait_signal("never")
            finally:
                ended.append("server")

        @pytest.mark.fibers(leaks="ignore")
        def test_leaves_one():
            fibers.spawn(server)
            fibers.yield_now()

        def test_after():
            assert ended == ["server"]
    """, "-p", "no:randomly")
    r.assert_outcomes(passed=2)
