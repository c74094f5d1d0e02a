"""``python -m fibers ps PATH`` and ``python -m fibers top PATH``: look at
a running program's fibers through its control socket
(:func:`fibers.debug.serve`).

``ps`` prints the table once (``--stacks``: each fiber's whole stack
too).  ``top`` redraws it every ``--interval`` seconds, with the
scheduler's figures above it, until ``q`` (or Ctrl-C), or after
``--iterations`` screens.  Either exits 1 with a one-line error when
nothing answers at PATH."""
import argparse
import os
import select
import shutil
import socket
import sys
import termios
import time
import tty

from .debug import _Client, _age, format_table


class _Failed(Exception):
    """A one-line error for the command line."""


def _connect(prog, path, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise _Failed(f"{prog}: no fibers debug server at {path}: "
                      f"{e.strerror or e}") from None
    return _Client(sock)


def _ask(prog, path, client, req):
    try:
        reply = client.ask(req)
    except socket.timeout:
        raise _Failed(f"{prog}: {path} did not answer in time") from None
    except (OSError, ValueError) as e:
        raise _Failed(f"{prog}: the server at {path} went away "
                      f"({e})") from None
    if not reply.get("ok"):
        raise _Failed(f"{prog}: {path}: {reply.get('error')}")
    return reply


def _summary(reply):
    n = {"ready": 0, "running": 0, "suspended": 0}
    for r in reply["fibers"]:
        n[r["state"]] = n.get(r["state"], 0) + 1
    return (f"{len(reply['fibers'])} fibers: {n['running']} running, "
            f"{n['ready']} ready, {n['suspended']} suspended")


def ps(path, stacks=False, timeout=5.0, out=sys.stdout):
    client = _connect("fibers ps", path, timeout)
    try:
        reply = _ask("fibers ps", path, client,
                     {"cmd": "ps", "stacks": stacks})
    finally:
        client.sock.close()
    out.write(f"pid {reply['pid']}, {reply['backend']}, "
              f"{_summary(reply)}\n")
    for line in format_table(reply["fibers"]):
        out.write(line + "\n")
    if stacks:
        for r in reply["fibers"]:
            out.write(f"\nFiber {r['id']} {r['name']!r} {r['state']}"
                      + (f", waiting on {r['waiting']}" if r["waiting"]
                         else "") + "\n")
            for filename, lineno, func, text in r["stack"]:
                out.write(f'  File "{filename}", line {lineno}, in {func}\n')
                if text:
                    out.write(f"    {text}\n")
    return 0


def top_screen(path, reply, width, height):
    """The lines of one top screen."""
    st = reply["states"]
    longest = f"{reply['tick_max'] * 1000:.1f} ms"
    head = [
        f"fibers top  pid {reply['pid']}  {reply['backend']}  {path}"
        f"  (q: quit)",
        f"Fibers: {sum(st.values())} live, {st.get('running', 0)} running, "
        f"{st.get('ready', 0)} ready, {st.get('suspended', 0)} suspended"
        f"   spawned {reply['spawned']}",
        f"Ticks: {reply['ticks']} total, {reply['ticks_per_second']:.1f}/s,"
        f" longest {longest}   I/O in flight: {reply['io_pending']}",
        f"Blocking pool: {reply['blocking_threads']} threads, "
        f"{reply['blocking_queue']} queued, {reply['blocking_jobs']} "
        f"of this scheduler's calls out",
        "",
    ]
    table = format_table(reply["fibers"], width)
    lines = [line[:width] for line in head] + table
    if len(lines) > height:
        hidden = len(lines) - height + 1
        lines = lines[:height - 1] + [f"... {hidden} more"]
    return lines


def top(path, interval=1.0, iterations=None, timeout=5.0,
        out=sys.stdout, inp=sys.stdin):
    client = _connect("fibers top", path, timeout)
    interactive = inp.isatty() and out.isatty()
    fd = inp.fileno() if interactive else -1
    saved = termios.tcgetattr(fd) if interactive else None
    shown = 0
    try:
        if interactive:
            tty.setcbreak(fd)
            out.write("\x1b[?1049h\x1b[?25l")      # own screen, no cursor
        while True:
            reply = _ask("fibers top", path, client, {"cmd": "top"})
            size = _size(out, interactive)
            lines = top_screen(path, reply, size.columns, size.lines)
            if interactive:
                out.write("\x1b[H" + "".join(line + "\x1b[K\r\n"
                                             for line in lines) + "\x1b[J")
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            shown += 1
            if iterations is not None and shown >= iterations:
                return 0
            if _wait_key(fd, interval) == "q":
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.sock.close()
        if interactive:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _size(out, interactive):
    # The terminal's size now (a window resized since start included;
    # COLUMNS and LINES, which may be stale, only without a terminal).
    if interactive:
        try:
            return os.get_terminal_size(out.fileno())
        except OSError:
            pass
    return shutil.get_terminal_size()


def _wait_key(fd, interval):
    # Up to `interval` seconds for a key; None on time out.  Without a
    # terminal, just the interval.
    deadline = time.monotonic() + interval
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if fd < 0:
            time.sleep(left)
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            ch = os.read(fd, 1)
            if not ch:
                return None
            if ch in (b"q", b"Q"):
                return "q"


def _positive(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _count(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m fibers",
        description="Look at a running program's fibers through its "
                    "control socket (fibers.debug.serve).")
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("ps", help="print the fibers table once")
    pp.add_argument("path", help="the control socket")
    pp.add_argument("-s", "--stacks", action="store_true",
                    help="print each fiber's stack too")
    tp = sub.add_parser("top", help="redraw the table until q")
    tp.add_argument("path", help="the control socket")
    tp.add_argument("-d", "--interval", type=_positive, default=1.0,
                    help="seconds between screens (default 1)")
    tp.add_argument("-n", "--iterations", type=_count, default=None,
                    help="stop after this many screens")
    args = p.parse_args(argv)
    try:
        if args.command == "ps":
            return ps(args.path, args.stacks)
        return top(args.path, args.interval, args.iterations)
    except _Failed as e:
        print(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
