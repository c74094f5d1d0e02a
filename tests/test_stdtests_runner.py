"""tools/stdtests.py, the runner of CPython's own tests under
fibers.patch(): its outcomes and counts from a synthetic module with one
test of each kind (a hang and a crash of the child included), and a slice
of CPython's test_selectors run unpatched and patched on each backend
with no failure that only the patched run has."""
import os
import sys
import textwrap

import pytest

import capabilities
from tools import stdtests

SYNTHETIC = '''
import os, socket, time, unittest
import fibers

class Kinds(unittest.TestCase):
    def test_a_pass(self):
        pass

    def test_b_fail(self):
        self.assertEqual(1, 2)

    def test_c_error(self):
        raise KeyError("boom")

    def test_d_skip(self):
        self.skipTest("not here")

    @unittest.expectedFailure
    def test_e_xfail(self):
        self.assertTrue(False)

    def test_f_subtest_fails(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)

    def test_g_hangs(self):
        time.sleep(3600)

    def test_h_crashes(self):
        os.abort()

    def test_i_in_a_fiber_only_patched(self):
        # Patched, each test is a fiber and socket.socket() a fibers one.
        with socket.socket() as s:
            self.assertIs(type(s), socket.socket)
        self.assertFalse(fibers._core._in_fiber())

    def test_j_after_the_hang_and_the_crash(self):
        pass

class BrokenClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise RuntimeError("class fixture")

    def test_never_runs(self):
        pass
'''


@pytest.fixture
def synthetic(tmp_path):
    (tmp_path / "stdtests_synthetic.py").write_text(textwrap.dedent(SYNTHETIC))
    return str(tmp_path)


def _ids(outcomes):
    # "pkg.Class.test_x" -> "test_x"; "setUpClass (pkg.Class)" -> itself.
    return {tid.split(" ")[0].rsplit(".", 1)[-1]: o
            for tid, (o, _) in outcomes.items()}


def test_outcomes_counts_and_regressions_from_a_synthetic_module(
        synthetic, backend):
    got = {}
    for mode in ("unpatched", "patched"):
        got[mode] = stdtests.run_module(
            sys.executable, "stdtests_synthetic", mode, backend, limit=3,
            module_limit=120, path=[synthetic])
    unp, pat = got["unpatched"], got["patched"]
    expect = {"test_a_pass": "pass", "test_b_fail": "fail",
              "test_c_error": "error", "test_d_skip": "skip",
              "test_e_xfail": "xfail", "test_f_subtest_fails": "fail",
              "test_g_hangs": "hang", "test_h_crashes": "crash",
              "test_j_after_the_hang_and_the_crash": "pass",
              "setUpClass": "error"}
    assert _ids(unp) == dict(expect, test_i_in_a_fiber_only_patched="pass")
    assert _ids(pat) == dict(expect, test_i_in_a_fiber_only_patched="fail")
    # pass/fail/error/skip: an xfail is a pass; a hang and a crash fail.
    assert stdtests.counts(unp) == {"pass": 4, "fail": 4, "error": 2,
                                    "skip": 1}
    assert stdtests.counts(pat) == {"pass": 3, "fail": 5, "error": 2,
                                    "skip": 1}
    reg = stdtests.regressions(unp, pat)
    assert [(t.rsplit(".", 1)[-1], o) for t, o, _ in reg] == \
        [("test_i_in_a_fiber_only_patched", "fail")]
    assert "is not <class 'socket.socket'>" in reg[0][2]
    assert "boom" in unp[next(t for t in unp if "test_c_error" in t)][1]
    hang = pat[next(t for t in pat if "test_g_hangs" in t)][1]
    assert "Timeout (" in hang          # faulthandler's dump is kept
    table = stdtests.report({"stdtests_synthetic": (unp, pat)}, backend,
                            "3.x", "today")
    assert "| stdtests_synthetic | 4/4/2/1 | 3/5/2/1 | 0 |" in table
    # A patched run cut short: what it never reached is counted.
    short = dict(list(pat.items())[:-2])
    cut = stdtests.report({"stdtests_synthetic": (unp, short)}, backend,
                          "3.x", "today")
    row = cut.split("| stdtests_synthetic | 4/4/2/1 | ")[1].split("\n")[0]
    assert row.endswith(" | 2 |"), row
    assert "`stdtests_synthetic.Kinds.test_i_in_a_fiber_only_patched`: " \
        "fail: AssertionError" in table


def test_a_slice_of_test_selectors_fails_nothing_only_patched(backend):
    # The DefaultSelector tests, test_select_interrupt_exc included (a
    # SIGALRM handler that raises while the fiber waits in select()).
    try:
        import test.test_selectors  # noqa: F401
    except ImportError as e:
        capabilities.skip("cpython_tests", f"CPython's test package is "
                          f"not installed with this Python: {e}")
    got = {mode: stdtests.run_module(
        sys.executable, "test_selectors", mode, backend, limit=30,
        module_limit=120, k=["DefaultSelectorTestCase"])
        for mode in ("unpatched", "patched")}
    unp, pat = got["unpatched"], got["patched"]
    assert len(unp) >= 15 and set(pat) == set(unp)
    assert any(t.endswith("test_select_interrupt_exc") for t in pat)
    assert stdtests.regressions(unp, pat) == []
    assert stdtests.counts(pat) == stdtests.counts(unp)
