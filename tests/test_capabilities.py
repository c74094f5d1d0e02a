"""Skips that cannot hide (tests/capabilities.py): pytest runs, in a
subprocess, on a tiny suite whose tests skip for capabilities; without
FIBERS_REQUIRE the run passes and its summary names what was not tested,
with it the run fails."""
import os
import subprocess
import sys
import textwrap

import pytest

from capabilities import CAPABILITIES, REQUIRED_ON_CI

TESTS = os.path.dirname(os.path.abspath(__file__))

SUITE = {
    "test_some.py": """
        from capabilities import requires, skip

        def test_runs():
            pass

        def test_needs_tmux():
            skip("tmux", "tmux is not installed")

        @requires("ipv6", "cannot bind ::1 here")
        def test_needs_ipv6():
            pass

        @requires("openssl", None)
        def test_has_openssl():
            pass

        def test_not_applicable():
            skip("datastack", "no data stack on this Python")
    """,
    "test_module_level.py": """
        import capabilities

        capabilities.importorskip("no_such_module_here", "rich")

        def test_never_collected():
            raise AssertionError("collected although its module skipped")
    """,
}


def run_pytest(tmp_path, files, require=None):
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=TESTS)
    env.pop("FIBERS_REQUIRE", None)
    if require is not None:
        env["FIBERS_REQUIRE"] = require
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "capabilities", "-p",
         "no:cacheprovider", "-q", "-rs", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_without_a_requirement_the_summary_names_what_was_not_tested(
        tmp_path):
    rc, out = run_pytest(tmp_path, SUITE)
    assert rc == 0, out
    assert "2 passed, 4 skipped" in out
    lines = out.splitlines()
    assert "capabilities not tested here: datastack, ipv6, rich, tmux" \
        in lines, out
    # Each with what it takes, and one skip's reason.
    assert f"tmux: 1 skipped; needs {CAPABILITIES['tmux'][1]}" in lines
    assert any("test_needs_tmux: [tmux] tmux is not installed" in line
               for line in lines), out
    assert any(line.startswith("rich: 1 skipped") for line in lines)
    # -rs still shows each skip, tagged with its capability.
    assert "[ipv6] cannot bind ::1 here" in out


def test_with_fibers_require_ci_a_skipped_capability_fails_the_run(tmp_path):
    rc, out = run_pytest(tmp_path, SUITE, require="ci")
    assert rc == 1, out
    assert "2 passed, 4 skipped" in out         # no test failed as such
    assert ("FAILED (FIBERS_REQUIRE): required capabilities not tested: "
            "ipv6, rich, tmux") in out.splitlines(), out
    # datastack is not required on CI: listed, but it fails nothing.
    assert "datastack: 1 skipped" in out


def test_only_the_capabilities_named_are_required(tmp_path):
    rc, out = run_pytest(tmp_path, SUITE, require="tmux")
    assert rc == 1, out
    assert "required capabilities not tested: tmux" in out
    rc, out = run_pytest(tmp_path, SUITE, require="openssl,datastack")
    assert rc == 1, out                         # datastack skipped
    rc, out = run_pytest(tmp_path, SUITE, require="openssl")
    assert rc == 0, out
    assert "capabilities not tested here: datastack, ipv6, rich, tmux" in out


def test_a_skip_without_a_capability_fails_a_required_run(tmp_path):
    files = {"test_untagged.py": """
        import pytest

        def test_hides():
            pytest.skip("some reason nobody reads")

        @pytest.mark.skipif(True, reason="neither this one")
        def test_hides_too():
            pass

        @pytest.mark.xfail(reason="an expected failure is not a skip")
        def test_xfails():
            raise AssertionError
    """}
    rc, out = run_pytest(tmp_path, files)
    assert rc == 0, out
    assert "capabilities not tested here: (untagged)" in out
    rc, out = run_pytest(tmp_path, files, require="ci")
    assert rc == 1, out
    assert "REQUIRED (untagged): 2 skipped" in out
    assert "required capabilities not tested: (untagged)" in out


def test_nothing_skipped_says_so(tmp_path):
    files = {"test_fine.py": """
        from capabilities import requires

        @requires("tmux", None)
        def test_has_tmux():
            pass
    """}
    rc, out = run_pytest(tmp_path, files, require="ci")
    assert rc == 0, out
    assert "capabilities: no test skipped for a required one" in out
    rc, out = run_pytest(tmp_path, files)
    assert rc == 0, out
    assert "capabilities" not in out


def test_unknown_names_are_refused(tmp_path):
    rc, out = run_pytest(tmp_path, SUITE, require="ci,tmuxx")
    assert rc == pytest.ExitCode.USAGE_ERROR, out
    assert "unknown capability 'tmuxx'" in out
    with pytest.raises(ValueError, match="unknown capability"):
        __import__("capabilities").skip("tmuxx", "a typo")


def test_ci_requires_everything_but_what_a_python_lacks():
    assert REQUIRED_ON_CI == set(CAPABILITIES) - {"datastack"}
