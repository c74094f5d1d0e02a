"""smtplib, in fibers under fibers.patch(), sending to aiosmtpd's
Controller in a thread (tests/libservers.py), on both pump backends.

The server holds every DATA until all the senders are in DATA at once
(bounded), so the messages arrive only if the fibers sent concurrently;
each message is then checked as the server received it."""
import email
import smtplib
from email.message import EmailMessage

import pytest

import capabilities
import fibers
from libservers import PEER_WAIT, SMTPServer, patched, rsched  # noqa: F401

capabilities.importorskip(
    "aiosmtpd", "client_libs", "aiosmtpd (make's TEST_DEPS) is not installed")

N = 10


@pytest.fixture
def smtp_server():
    srv = SMTPServer(N)
    yield srv
    srv.stop()


def test_10_fibers_send_at_once(rsched, smtp_server, patched):
    def send(i):
        msg = EmailMessage()
        msg["From"] = f"sender{i}@example.org"
        msg["To"] = f"rcpt{i}@example.org, copy@example.org"
        msg["Subject"] = f"message {i}"
        msg.set_content(f"body {i}\n" * (i + 1))
        with smtplib.SMTP("127.0.0.1", smtp_server.port,
                          timeout=PEER_WAIT) as s:
            s.ehlo()
            refused = s.send_message(msg)
            s.quit()
        return refused

    def main():
        jobs = [fibers.spawn(send, i) for i in range(N)]
        return [j.join() for j in jobs]

    assert rsched.run(main) == [{}] * N
    box = smtp_server.mailbox
    assert box.most == N and not box.gave_up
    got = {}
    for mail_from, rcpts, content in box.messages:
        m = email.message_from_bytes(content)
        i = int(m["Subject"].split()[1])
        got[i] = (mail_from, rcpts, m.get_payload())
    # Lines travel with CRLF ends on the wire, and aiosmtpd keeps them.
    assert got == {i: (f"sender{i}@example.org",
                       [f"rcpt{i}@example.org", "copy@example.org"],
                       f"body {i}\r\n" * (i + 1)) for i in range(N)}
