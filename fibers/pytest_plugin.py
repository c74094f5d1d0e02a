"""The fibers pytest plugin: ``@pytest.mark.fibers`` and its fixtures.

Installed with the package (a ``pytest11`` entry point), so nothing needs
enabling::

    import fibers
    import pytest

    @pytest.mark.fibers
    def test_an_hour_passes_at_once(fibers_clock):
        fibers.sleep(3600)
        assert fibers_clock.now() == 3600.0

Design notes
============

*The test is a fiber.*  A marked test is a plain ``def``: its fixtures are
set up as usual, outside any fiber, then the function itself runs as the
main fiber of the scheduler that the ``fibers_scheduler`` fixture made
(``Scheduler.run(main)``), with an autojumping ``VirtualClock``.  The
scheduler is a fixture, not a private of the hook, so that the test's other
fixtures can spawn fibers on it or tune it before the test runs, and so
that the fixture closes it (killing whatever is left) on teardown whatever
happened.  ``async def`` and generator tests are refused with one line:
fibers code is plain code.

*Nothing may be lost.*  A fiber that ends with an exception nobody joined
it for is what fibers logs as "uncaught exception"; in a marked test it is
a failure, reported through ``Scheduler.on_fiber_error`` (not by reading
the log), as an ExceptionGroup naming each fiber, together with the test's
own exception if it had one.  A fiber still alive when the test function
returns (ready, parked, sleeping) is a failure too, named with its state,
what it waits on and its stack (``Scheduler.fibers()``); that check is
strict on purpose: a child that "would have finished next tick" was never
joined.  Both can be turned off per test with the marker's options
(``errors="log"``, ``leaks="ignore"``).

*Pytest's own outcomes pass through.*  ``pytest.skip()``, ``xfail()`` and
``fail()`` are BaseExceptions that are not Exceptions: they are re-raised
as they are, never wrapped in a group.

*Cheap when unused.*  The plugin is loaded in every pytest run of an
environment where fibers is installed, so fibers itself is imported only
when a marked test or a fibers fixture asks for it.

*Backends.*  The ``fibers_backend`` fixture answers None (the default
choice: ``FIBERS_BACKEND``, else io_uring where it runs, else epoll); a
project overrides it in its conftest (parametrize it to run every fibers
test on both backends), and the marker's ``backend=`` wins over it.
"""
import inspect
import sys
import warnings

import pytest

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

# The marker's options and their defaults.
_DEFAULTS = {"backend": None, "autojump": True, "leaks": "fail",
             "errors": "fail"}
_CHOICES = {"leaks": ("fail", "ignore"), "errors": ("fail", "log")}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fibers(backend=None, autojump=True, leaks='fail', errors='fail'): "
        "run the test as a fiber on a fresh fibers.Scheduler with an "
        "autojumping VirtualClock (the fibers_scheduler and fibers_clock "
        "fixtures); a fiber left alive, or one that raised and was never "
        "joined, fails the test")


def _options(node):
    """The fibers marker's options for ``node``: the defaults, overridden
    from the farthest marker (a module's pytestmark) to the closest."""
    __tracebackhide__ = True        # the error names the marker; show the caller
    opts = dict(_DEFAULTS)
    marks = list(node.iter_markers(name="fibers"))
    for mark in reversed(marks):
        if mark.args:
            raise TypeError(f"@pytest.mark.fibers takes keyword options "
                            f"only, got {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - set(_DEFAULTS))
        if unknown:
            raise TypeError(f"@pytest.mark.fibers: unknown option(s) "
                            f"{', '.join(unknown)} (known: "
                            f"{', '.join(_DEFAULTS)})")
        opts.update(mark.kwargs)
    for key, choices in _CHOICES.items():
        if opts[key] not in choices:
            raise ValueError(f"@pytest.mark.fibers: {key} must be one of "
                             f"{', '.join(map(repr, choices))}, got "
                             f"{opts[key]!r}")
    if not isinstance(opts["autojump"], bool):
        raise TypeError(f"@pytest.mark.fibers: autojump must be True or "
                        f"False, got {opts['autojump']!r}")
    return opts


def _marked_function(collector, obj):
    # At collection, before the item exists: the function's own marks and
    # its module's or class's.
    marks = getattr(obj, "pytestmark", [])
    if not isinstance(marks, (list, tuple)):
        marks = [marks]
    if any(getattr(m, "name", None) == "fibers" for m in marks):
        return True
    return collector.get_closest_marker("fibers") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    if not (inspect.isfunction(obj) and collector.istestfunction(obj, name)
            and _marked_function(collector, obj)):
        return None
    if inspect.isgeneratorfunction(obj):
        # pytest refuses a generator test at collection, for the whole
        # module; a marked one becomes an item that fails with our reason.
        return [pytest.Function.from_parent(collector, name=name)]
    # Make the test use fibers_scheduler the way @usefixtures does, so the
    # fixture and what it depends on (a parametrized fibers_backend) are
    # in the closure that pytest parametrizes.  Marks on the function are
    # read when pytest's own hook makes the item, right after us.
    if not any(getattr(m, "name", None) == "usefixtures"
               and "fibers_scheduler" in m.args
               for m in getattr(obj, "pytestmark", [])):
        pytest.mark.usefixtures("fibers_scheduler")(obj)
    return None


def _refusal(fn):
    kind = None
    if inspect.iscoroutinefunction(fn):
        kind = "an async def function"
    elif inspect.isasyncgenfunction(fn):
        kind = "an async generator function"
    elif inspect.isgeneratorfunction(fn):
        kind = "a generator function"
    if kind is None:
        return None
    return (f"@pytest.mark.fibers: {fn.__name__} is {kind}; a fibers test "
            f"is a plain def, run as a fiber (call fibers' blocking words "
            f"directly, no await or yield)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("fibers") is None:
        return None
    fn = pyfuncitem.obj
    why = _refusal(fn)
    if why is not None:
        pytest.fail(why, pytrace=False)
    opts = _options(pyfuncitem)
    sched = pyfuncitem.funcargs.get("fibers_scheduler")
    if sched is None:
        # The marker came after collection (a hook's add_marker).
        sched = pyfuncitem._request.getfixturevalue("fibers_scheduler")
    kwargs = {a: pyfuncitem.funcargs[a]
              for a in pyfuncitem._fixtureinfo.argnames}
    _run_test(pyfuncitem.name, sched, fn, kwargs, opts)
    return True


def _note(exc, text):
    # BaseException.add_note is 3.11+; the exceptiongroup backport (and
    # pytest's report) read __notes__ on 3.10 too.
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        try:
            exc.__notes__ = notes = []
        except (AttributeError, TypeError):
            return
    notes.append(text)


def _run_test(name, sched, fn, kwargs, opts):
    import fibers

    failed = []                       # (fiber, exc), in the order they ended

    def main():
        fibers.current().name = name
        return fn(**kwargs)

    def on_error(fiber, exc):
        failed.append((fiber, exc))

    mine = opts["errors"] == "fail"
    before = sched.on_fiber_error          # a fixture's, say
    if mine:
        sched.on_fiber_error = on_error
    result = raised = None
    try:
        try:
            result = sched.run(main)
        except BaseException as e:
            raised = e
    finally:
        if mine and sched.on_fiber_error is on_error:
            # Fibers that close() kills, and that raise on the way out, go
            # where they went before the test (the log): it is over.
            sched.on_fiber_error = before
    if raised is not None and not isinstance(raised, Exception):
        # pytest.skip/xfail/fail, KeyboardInterrupt, SystemExit.
        raise raised
    if failed:
        excs = []
        for fiber, exc in failed:
            _note(exc, f"raised in fiber {fiber.name!r}, which nobody "
                       f"joined")
            excs.append(exc)
        names = ", ".join(f"{f.name!r} ({type(e).__name__})"
                          for f, e in failed)
        n = len(failed)
        fibers_word = "fiber" if n == 1 else "fibers"
        if raised is not None:
            msg = (f"{name} raised {type(raised).__name__}, and {n} "
                   f"{fibers_word} of the test raised too: {names}")
            excs.insert(0, raised)
        else:
            msg = (f"{n} {fibers_word} of {name} raised and nobody "
                   f"joined {'it' if n == 1 else 'them'}: {names}")
        # An ExceptionGroup, unless a fiber raised a BaseException
        # (pytest.fail() in a child, say).
        raise BaseExceptionGroup(msg, excs)
    if raised is not None:
        raise raised
    if opts["leaks"] == "fail":
        _check_leaks(name, sched)
    if result is not None:
        # As pytest says of a plain test that returns a value.
        # (PytestReturnNotNoneWarning is pytest >= 7.2.)
        category = getattr(pytest, "PytestReturnNotNoneWarning",
                           pytest.PytestWarning)
        warnings.warn(category(
            f"Test functions should return None, but {name} returned "
            f"{type(result)!r}.  Did you mean to use `assert` instead of "
            f"`return`?"), stacklevel=2)


def _check_leaks(name, sched):
    left = sched.fibers()
    if not left:
        return
    n = len(left)
    head = (f"{n} {'fiber' if n == 1 else 'fibers'} still alive at the end "
            f"of {name}: " + ", ".join(repr(i.name) for i in left))
    body = "\n\n".join(i.format().rstrip("\n") for i in left)
    pytest.fail(f"{head}\n(join them, kill them, or mark the test "
                f"@pytest.mark.fibers(leaks=\"ignore\"))\n\n{body}",
                pytrace=False)


# ---- fixtures ------------------------------------------------------------------

@pytest.fixture
def fibers_backend():
    """The pump backend for ``fibers_scheduler``: None, the default choice
    (``FIBERS_BACKEND``, else io_uring where it runs, else epoll).
    Override it in a conftest.py, or parametrize it there to run every
    fibers test on each backend; the marker's ``backend=`` wins."""
    return None


@pytest.fixture
def fibers_clock(request):
    """The test's ``fibers.VirtualClock``: autojumping unless the marker
    says ``autojump=False``."""
    __tracebackhide__ = True        # a bad marker: show the test
    import fibers

    opts = _options(request.node)
    return fibers.VirtualClock(autojump=opts["autojump"])


@pytest.fixture
def fibers_scheduler(request, fibers_clock, fibers_backend):
    """A fresh ``fibers.Scheduler`` on ``fibers_clock``, closed after the
    test (which kills the fibers still alive).  A marked test runs on it;
    an unmarked one may drive it itself (``fibers_scheduler.run(main)``)."""
    __tracebackhide__ = True        # a bad marker: show the test
    import fibers

    opts = _options(request.node)
    backend = opts["backend"] if opts["backend"] is not None \
        else fibers_backend
    sched = fibers.Scheduler(clock=fibers_clock, backend=backend)
    yield sched
    sched.close()
