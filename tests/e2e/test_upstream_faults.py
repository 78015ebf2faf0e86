"""Hostile or broken upstream replies: bounded, and always a temporary failure for the client
(never a 250, never a hang, never a crash), with nothing relayed when it happens before DATA.
Failover: with a list of upstream addresses, one that is down or fails TLS is skipped."""
from __future__ import annotations

import socket

import pytest

from support.clients import RawSMTP, dot_stuff, smtplib_send

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: faults\r\n\r\nhello\r\n"

GREETINGS = {
    "one-megabyte-line": "220 " + "x" * 1_000_000,
    "code-out-of-range": "999 hello",
    "code-below-range": "099 hello",
    "endless-multiline": ["220 x"] * 1000,
    "never-ends": "220-start of a reply that never ends",
    "inconsistent-codes": ["220 a", "250 b"],
    "not-a-reply": "HELLO THERE",
    "refusal-554": "554 5.7.1 go away",
}


@pytest.mark.parametrize("name", sorted(GREETINGS))
def test_hostile_greeting_gives_4xx_at_mail_and_nothing_is_sent(relay_factory, name):
    r = relay_factory(upstream={"greeting": GREETINGS[name]}, limits={"upstream_timeout": 2})
    with r.session() as c:
        rep = c.cmd("MAIL FROM:<a@x.test>")
        assert 400 <= rep.code < 500, rep
        assert rep.enhanced and rep.enhanced.startswith("4."), rep
        c.quit()
    assert not any(cmd.upper().startswith(b"MAIL") for cmd in r.up.commands())
    assert r.up.messages == []


@pytest.mark.parametrize("final", [
    [["250 ok"] * 300],            # endless multi-line final reply (a list of replies: one)
    "250 " + "y" * 100_000,        # overlong final reply
    "354 send more",               # intermediate code where a final one is due
    "199 odd",                     # out of range
])
def test_hostile_final_reply_is_never_a_250(relay_factory, final):
    r = relay_factory(upstream={"final_reply": final}, limits={"upstream_timeout": 3})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<a@x.test>").code == 250
        assert c.cmd("RCPT TO:<b@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        rep = c.reply(timeout=15)
        assert 400 <= rep.code < 500, rep
    # The session survives: a new one works (the upstream still misbehaves, so 4xx again).
    with r.session() as c:
        assert c.cmd("NOOP").code == 250


def test_overlong_ehlo_reply_gives_4xx(relay_factory):
    r = relay_factory(upstream={"ehlo_extensions": ["X-PAD " + "z" * 5000]}, limits={"upstream_timeout": 2})
    with r.session() as c:
        rep = c.cmd("MAIL FROM:<a@x.test>")
        assert rep.code == 451 and rep.enhanced == "4.5.0", rep
        c.quit()
    assert r.up.messages == []


# --------------------------------------------------------------------------- failover
def closed_address() -> str:
    """A local address nothing listens on (bound, then closed): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def send_one(sg, pki) -> dict:
    return smtplib_send(sg.port, pki["ca"], "a@x.test", ["b@y.test"], MSG)


def test_first_upstream_down_the_message_arrives_at_the_second(upstream_factory, sealgate_factory, pki):
    down = closed_address()
    second = upstream_factory()
    sg = sealgate_factory([down, second.address])
    assert send_one(sg, pki) == {}
    assert [t.content for t in second.messages] == [MSG]
    log = sg.stderr_text()
    assert "upstream address failed" in log and down in log, log


def test_an_upstream_with_an_untrusted_certificate_is_skipped_and_never_sent_mail(
        upstream_factory, sealgate_factory, pki):
    untrusted = upstream_factory(cert=pki["self_signed"], key=pki["self_signed_key"])
    second = upstream_factory()
    sg = sealgate_factory([untrusted.address, second.address])
    assert send_one(sg, pki) == {}
    assert [t.content for t in second.messages] == [MSG]
    assert untrusted.sessions, "the untrusted upstream was tried first"
    assert untrusted.transactions == [] and b"a@x.test" not in untrusted.raw
    assert untrusted.address in sg.stderr_text()


def test_when_every_upstream_fails_the_client_gets_the_last_ones_reason(
        upstream_factory, sealgate_factory, pki):
    untrusted = upstream_factory(cert=pki["self_signed"], key=pki["self_signed_key"])
    sg = sealgate_factory([closed_address(), untrusted.address])
    with RawSMTP("127.0.0.1", sg.port, ca_file=pki["ca"], server_hostname="localhost") as c:
        c.start(tls=True)
        rep = c.cmd("MAIL FROM:<a@x.test>")
        assert (rep.code, rep.enhanced) == (451, "4.7.5"), rep  # the certificate, not "unreachable"
        c.quit()
    assert untrusted.transactions == []
