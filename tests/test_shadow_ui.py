"""fibers-shadow's live UI as a person sees it: the real program in a tmux
pane (120x40, a private tmux server), keys sent with ``send-keys``, the
screen read back with ``capture-pane -p``, the store checked with sqlite3.
Every wait polls a condition under a deadline; the tmux server is killed
at the end whatever happens."""
import os
import re
import shlex
import sqlite3
import sys

import pytest

import capabilities

capabilities.importorskip("rich", "rich",
                          "the UI needs rich (the shadow extra)")

from test_shadow_e2e import DEADLINE, poll  # noqa: E402
from tmuxhelp import TmuxPane, need_tmux  # noqa: E402


class Pane(TmuxPane):
    """fibers-shadow in a detached tmux session on a private server; a
    wrapper writes its exit status to a file, then prints a prompt."""

    def __init__(self, tmp_path, env=None):
        self.root = os.path.realpath(tmp_path / "root")
        os.makedirs(self.root)
        self.state = str(tmp_path / "state")
        self.store = str(tmp_path / "store.db")
        self.rc = tmp_path / "rc"
        self.stty = tmp_path / "stty"
        self.err = tmp_path / "err"
        cmd = " ".join(shlex.quote(a) for a in (
            *(["env", *(f"{k}={v}" for k, v in env.items())] if env
              else []),
            sys.executable, "-m", "fibers.shadow", "--root", self.root,
            "--state-dir", self.state, "--store", "sqlite:///" + self.store))
        # `trap :` (not `trap ''`, which the child would inherit): Ctrl-C
        # reaches fibers-shadow, and the wrapper lives on to report
        script = (f"trap : INT; {cmd} 2>{shlex.quote(str(self.err))}; "
                  f"echo $? >{shlex.quote(str(self.rc))}; "
                  f"stty -a >{shlex.quote(str(self.stty))}; "
                  f"printf 'WRAPPER-PROMPT$ '; exec sleep 600")
        super().__init__(f"fibers-shadow-ui-{os.getpid()}", "shadow",
                         script, 120, 40)

    def flag(self, name) -> str:
        return self.tmux("display-message", "-p", "-t", "shadow",
                         f"#{{{name}}}").strip()

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "shadow", *keys)

    def kind_row(self, kind):
        """(state, total) of ``kind``'s row on screen, or None."""
        m = re.search(rf"\[\w\]\s+{kind}\s+(on|off)\s+(\d+)", self.screen())
        return (m.group(1), int(m.group(2))) if m else None

    def stored(self, kind, like):
        try:
            db = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True,
                                 timeout=5)
            try:
                return {os.fsdecode(p) for (p,) in db.execute(
                    "SELECT path FROM events WHERE kind = ? AND "
                    "CAST(path AS TEXT) LIKE ?",
                    (kind, like))}
            finally:
                db.close()
        except sqlite3.Error:
            return set()


@pytest.fixture
def pane(tmp_path):
    need_tmux()
    p = Pane(tmp_path)
    try:
        yield p
    finally:
        p.close()


def make_files(root, prefix, n, content=b"x\n"):
    names = []
    for i in range(n):
        path = os.path.join(root, f"{prefix}-{i}")
        with open(path, "wb") as f:
            f.write(content)
        names.append(path)
    return set(names)


def test_ui_counts_toggles_and_quits(pane):
    # the UI is up, on the alternate screen, with every kind and key listed
    poll(lambda: "events per second, per kind" in pane.screen(),
         "the UI's first frame")
    assert pane.flag("alternate_on") == "1"
    screen = pane.screen()
    for key, kind in (("c", "created"), ("d", "deleted"), ("m", "modified"),
                      ("r", "moved")):
        assert re.search(rf"\[{key}\]\s+{kind}\s+on\b", screen), screen
        assert f"{key} {kind}" in screen, screen        # the keys line
    assert "q quit" in screen
    assert pane.kind_row("created") == ("on", 0)

    # counts rise while files are made
    first = make_files(pane.root, "a", 15)
    poll(lambda: (pane.kind_row("created") or ("", 0))[1] >= 5,
         "the created count to rise")
    more = make_files(pane.root, "b", 15)
    poll(lambda: (pane.kind_row("created") or ("", 0))[1] >= 30,
         "the created count to reach 30")
    poll(lambda: pane.stored("created", "%") >= first | more,
         "the 30 created rows in the store")
    poll(lambda: re.search(r"lag 0\b", pane.screen()), "lag 0 on screen")
    created_before = pane.kind_row("created")[1]
    assert created_before == 30

    # `c` turns created off: new files are no longer counted as created
    # nor shipped as created (their writes still ship, as modified)
    pane.keys("c")
    poll(lambda: pane.kind_row("created") == ("off", created_before),
         "created shown off")
    after = make_files(pane.root, "off", 10, b"written after the toggle\n")
    poll(lambda: pane.stored("modified", "%/off-%") >= after,
         "the new files' writes in the store")
    assert pane.stored("created", "%/off-%") == set()
    assert pane.kind_row("created") == ("off", created_before)
    assert "> created off" in pane.screen()

    # and `c` again brings it back
    pane.keys("c")
    poll(lambda: pane.kind_row("created") == ("on", created_before),
         "created shown on again")
    back = make_files(pane.root, "back", 5)
    poll(lambda: pane.stored("created", "%/back-%") >= back,
         "created rows again")

    # `q` quits: exit status 0, the shell's screen back, the tty sane
    pane.keys("q")
    poll(lambda: pane.rc.exists() and pane.rc.read_text().strip(),
         "the exit status")
    assert pane.rc.read_text().strip() == "0", pane.err.read_text()
    poll(lambda: "WRAPPER-PROMPT$" in pane.screen(), "the prompt")
    screen = pane.screen()
    assert "events per second" not in screen, screen
    assert pane.flag("alternate_on") == "0"
    assert pane.flag("cursor_flag") == "1"
    stty = pane.stty.read_text()
    assert re.search(r"(?<!-)icanon", stty) and re.search(r"(?<!-)echo\b",
                                                          stty), stty


def test_ui_pause_window_and_resize(pane):
    poll(lambda: "events per second, per kind" in pane.screen(),
         "the UI's first frame")
    # + and - walk the coalescing window (default 200 ms)
    pane.keys("+")
    poll(lambda: "window 500 ms" in pane.screen(), "window 500 ms")
    pane.keys("-", "-")
    poll(lambda: "window 100 ms" in pane.screen(), "window 100 ms")

    # p pauses shipping: events are journaled but not shipped
    pane.keys("p")
    poll(lambda: "PAUSED" in pane.screen(), "PAUSED shown")
    files = make_files(pane.root, "p", 10)
    poll(lambda: re.search(r"depth 10\b", pane.screen()),
         "10 events waiting in the journal")
    assert pane.stored("created", "%/p-%") == set()
    pane.keys("p")
    poll(lambda: pane.stored("created", "%/p-%") >= files,
         "the paused events shipped after resume")
    poll(lambda: "PAUSED" not in pane.screen(), "PAUSED gone")

    # SIGWINCH: a narrower window is redrawn to its new width
    pane.tmux("resize-window", "-t", "shadow", "-x", "90", "-y", "40")
    def narrow():
        s = pane.screen()
        return ("events per second" in s and "quit" in s
                and max(len(line) for line in s.splitlines()) <= 90
                and re.search(r"last \d+ s", s).group(0) != "last 40 s")
    poll(narrow, "a redraw at 90 columns")

    pane.keys("q")
    poll(lambda: pane.rc.exists() and pane.rc.read_text().strip(),
         "the exit status")
    assert pane.rc.read_text().strip() == "0", pane.err.read_text()


def test_ui_ctrl_c_drains_and_restores(pane):
    poll(lambda: "events per second, per kind" in pane.screen(),
         "the UI's first frame")
    files = make_files(pane.root, "c", 10)
    poll(lambda: (pane.kind_row("created") or ("", 0))[1] >= 10,
         "the created count")
    pane.keys("C-c")            # SIGINT: drain, ship, exit 0
    poll(lambda: pane.rc.exists() and pane.rc.read_text().strip(),
         "the exit status")
    assert pane.rc.read_text().strip() == "0", pane.err.read_text()
    poll(lambda: "WRAPPER-PROMPT$" in pane.screen(), "the prompt")
    assert pane.flag("alternate_on") == "0"
    assert pane.flag("cursor_flag") == "1"
    assert re.search(r"(?<!-)icanon", pane.stty.read_text())
    assert pane.stored("created", "%/c-%") >= files


def test_without_rich_the_ui_names_the_extra(tmp_path):
    """A plain `pip install .` has no rich: on a terminal, fibers-shadow
    says in one line which extra to install and exits 2, before it starts
    anything (not a traceback once the pipeline runs)."""
    need_tmux()
    # rich made unimportable for that process only: a package of the same
    # name ahead of site-packages, failing as a missing one does
    hide = tmp_path / "hide-rich"
    (hide / "rich").mkdir(parents=True)
    (hide / "rich" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rich'\", "
        "name='rich')\n")
    path = os.pathsep.join(x for x in (str(hide),
                                       os.environ.get("PYTHONPATH")) if x)
    p = Pane(tmp_path, env={"PYTHONPATH": path})
    try:
        poll(lambda: p.rc.exists() and p.rc.read_text().strip(),
             "the exit status")
        err = p.err.read_text()
        assert p.rc.read_text().strip() == "2", err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "pip install 'fibers[shadow]'" in err and "rich" in err
        assert not os.path.exists(p.state)      # nothing was started
        poll(lambda: "WRAPPER-PROMPT$" in p.screen(), "the prompt")
        assert p.flag("alternate_on") == "0"
    finally:
        p.close()


def test_a_terminal_that_reads_nothing_never_stalls_the_pipeline(tmp_path):
    """The UI drawing into a pipe nobody reads: its writes park on
    wait_writable, later frames are skipped, and the pipeline carries on
    journaling and shipping; a `q` down the input pipe still quits."""
    import fibers
    from fibers.shadow import config
    from fibers.shadow.pipeline import Shadow
    from fibers.shadow.ui import UI

    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "state").mkdir()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    result = {}

    def main():
        settings, overrides = config.load(
            None, [str(root)], "sqlite:///" + str(tmp_path / "store.db"),
            str(tmp_path / "state"), ui=True)
        app = Shadow(settings, overrides)
        app.start()
        quit_ = []
        ui = UI(app, lambda: quit_.append(1), fd_in=in_r, fd_out=out_w)
        f = fibers.spawn(ui.run)
        # the pipe's buffer fills: a draw is parked, later ticks skip
        fibers.wait_for(lambda: ui._drawing and ui.skipped > 3, 20)
        frames = ui.frames
        for i in range(50):
            (root / f"f{i}").write_bytes(b"x")
        fibers.wait_for(lambda: app.counts["shipped"] >= 50, 20)
        result["frames"] = (frames, ui.frames)
        os.write(in_w, b"q")
        f.join(10)
        result["quit"] = bool(quit_)
        app.stop(1.0)

    try:
        fibers.run(main)
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
    assert result["quit"]
    assert result["frames"][0] == result["frames"][1]   # stuck, not drawing
