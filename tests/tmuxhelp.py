"""A program in a real terminal: a detached session on a private tmux
server (its own socket, no config), the screen read back with
``capture-pane -p``; the server is killed, and the socket file it leaves
behind removed, by close()."""
import os
import shutil
import subprocess

import capabilities


def need_tmux():
    """Skip the calling test, with the reason, when tmux is missing."""
    if shutil.which("tmux") is None:
        capabilities.skip("tmux", "tmux is not installed "
                          "(sh tools/sysdeps.sh --test)")


class TmuxPane:
    """One session named `session` on the private server `sock`, running
    `sh -c script` in a `width` x `height` terminal."""

    def __init__(self, sock, session, script, width, height):
        self.sock = sock
        self.session = session
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height),
                  "-s", session, "sh", "-c", script)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null",
                               *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def close(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"],
                       capture_output=True, timeout=10)
        # tmux leaves the socket file of a killed server behind
        path = os.path.join(os.environ.get("TMUX_TMPDIR") or "/tmp",
                            f"tmux-{os.getuid()}", self.sock)
        try:
            os.unlink(path)
        except OSError:
            pass
