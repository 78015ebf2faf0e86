"""Abuse from clients (SECURITY.md, "Abuse"): the answer is always a clear reply or a clean
close, bounded in time and memory, and the process keeps serving others."""
from __future__ import annotations

import socket
import time

import pytest

from support.clients import RawSMTP, dot_stuff

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: abuse\r\n\r\nhello\r\n"


def still_serving(r, implicit_tls: bool = False) -> None:
    with r.client(timeout=15, implicit_tls=implicit_tls) as c:
        assert c.greeting().code == 220
        assert c.ehlo().code == 250
        c.quit()


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_garbage_instead_of_a_client_hello(relay_factory, tls):
    r = relay_factory(listen=[{"tls": tls}])
    s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
    if tls == "starttls":
        assert s.recv(512).startswith(b"220 ")
        s.sendall(b"EHLO x\r\n")
        time.sleep(0.2)
        s.recv(4096)
        s.sendall(b"STARTTLS\r\n")
        assert s.recv(512).startswith(b"220 ")
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
    s.settimeout(5)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert b"250" not in data
    still_serving(r, implicit_tls=(tls == "implicit"))
    assert r.up.messages == []


def test_idle_client_is_disconnected_with_421(relay_factory):
    r = relay_factory(limits={"command_timeout": 1})
    with r.client() as c:
        assert c.greeting().code == 220
        rep = c.reply(timeout=5)
        assert rep.code == 421 and rep.enhanced == "4.4.2", rep
        c.expect_closed(3)
    still_serving(r)


def test_stalled_data_is_dropped_not_relayed(relay_factory):
    r = relay_factory(limits={"data_timeout": 1})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<a@x.test>").code == 250
        assert c.cmd("RCPT TO:<b@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG)[:-3])  # everything but the final dot
        rep = c.reply(timeout=5)
        assert rep.code == 421, rep
    time.sleep(0.3)
    assert r.up.messages == []
    assert b"DATA" not in b" ".join(r.up.commands())


def test_a_thousand_recipients_then_the_limit(relay_factory):
    r = relay_factory(limits={"max_recipients": 1000})
    with r.session(timeout=30) as c:
        assert c.cmd("MAIL FROM:<a@x.test>").code == 250
        batch = b"".join(f"RCPT TO:<r{i}@y.test>\r\n".encode() for i in range(1001))
        c.send(batch)  # pipelined
        replies = c.replies(1001, timeout=30)
        assert [x.code for x in replies[:1000]] == [250] * 1000
        assert replies[1000].code == 452 and replies[1000].enhanced == "4.5.3"
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        assert c.reply(timeout=30).code == 250
    assert len(r.up.transactions[0].rcpts) == 1000


def test_header_of_ten_megabytes_and_a_long_single_line(relay_factory):
    # A 2 MB single line is refused by the line limit (554 5.6.0); a header section of
    # 100,000 fields (11 MB) by the MIME limits (554 5.6.0). Nothing is relayed, memory stays
    # bounded, and the session goes on.
    r = relay_factory(limits={"max_line_length": 1_000_000})
    big_line = b"X-Pad: " + b"a" * (2 * 1024 * 1024) + b"\r\n"
    many_headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100_000))
    for head in (big_line, many_headers):
        with r.session(timeout=30) as c:
            assert c.cmd("MAIL FROM:<a@x.test>").code == 250
            assert c.cmd("RCPT TO:<b@y.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(head + MSG))
            rep = c.reply(timeout=30)
            assert rep.code == 554 and rep.enhanced == "5.6.0", rep
            assert c.cmd("NOOP").code == 250
            # A normal message still goes through on the same session.
            assert c.cmd("MAIL FROM:<a@x.test>").code == 250
            assert c.cmd("RCPT TO:<b@y.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(MSG))
            assert c.reply(timeout=30).code == 250
    assert [m.content for m in r.up.messages] == [MSG, MSG]


@pytest.mark.parametrize("fields,ok", [(99, True), (100, True), (101, False)])
def test_header_field_limit_is_configurable(relay_factory, fields, ok):
    r = relay_factory(limits={"max_header_fields": 100})
    head = b"".join(b"X-H%d: v\r\n" % i for i in range(fields - 1)) + b"Subject: limit\r\n"
    with r.session() as c:
        assert c.cmd("MAIL FROM:<a@x.test>").code == 250
        assert c.cmd("RCPT TO:<b@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(head + b"\r\nbody\r\n"))
        rep = c.reply(timeout=30)
        if ok:
            assert rep.code == 250, rep
        else:
            assert rep.code == 554 and rep.enhanced == "5.6.0", rep
    assert len(r.up.messages) == (1 if ok else 0)


def test_a_command_trickled_byte_by_byte_is_cut_at_the_command_timeout(relay_factory):
    # One byte every 0.3 s keeps every read short, but the command as a whole must arrive
    # within command_timeout (2 s here).
    r = relay_factory(limits={"command_timeout": 2})
    with r.client() as c:
        assert c.greeting().code == 220
        started = time.monotonic()
        closed = False
        for b in b"NOOP and a very long trickle of bytes":
            try:
                c.send(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.3)
            if c.is_closed(timeout=0.01):
                closed = True
                break
        assert closed, "the trickling client was never cut off"
        assert time.monotonic() - started < 6
    still_serving(r)


def test_session_lifetime_is_bounded(relay_factory):
    r = relay_factory(limits={"session_timeout": 2, "command_timeout": 10})
    with r.client() as c:
        assert c.greeting().code == 220
        deadline = time.monotonic() + 6
        got = None
        while time.monotonic() < deadline:
            rep = c.cmd("NOOP")
            if rep.code != 250:
                got = rep
                break
            time.sleep(0.3)
        assert got is not None and got.code == 421, got
    still_serving(r)
