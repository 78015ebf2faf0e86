"""The upstream learns who the client is (SECURITY.md I13): XCLIENT after the upstream's EHLO,
XFORWARD before every MAIL, and a fail-closed 451 4.7.0 when the upstream cannot take it.

The scripted upstream (support/upstream.py) records every XCLIENT / XFORWARD it accepted with
its values xtext-decoded, and like Postfix stops offering XCLIENT once it succeeded.
"""
from __future__ import annotations

import base64

import pytest

from support.clients import dot_stuff

POSTFIX_XCLIENT = ["NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME", "PORT", "LOGIN", "DESTADDR", "DESTPORT"]
POSTFIX_XFORWARD = ["NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT"]

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: id\r\n\r\nhello\r\n"


def send_one(c, sender="a@x.test", rcpt="b@y.test"):
    r = c.cmd(f"MAIL FROM:<{sender}>")
    if r.code != 250:
        return r
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    assert r.code == 250, r
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(MSG))
    return c.reply()


def xclient_relay(relay_factory, forward=None, **upstream):
    upstream.setdefault("xclient", POSTFIX_XCLIENT)
    # forward=None leaves the key out: the default must be XCLIENT.
    return relay_factory(upstream=upstream, upstream_cfg={"forward_client": forward})


def test_default_is_xclient_with_the_real_client(relay_factory):
    r = xclient_relay(relay_factory)
    c = r.client()
    c.start(tls=True, name="client.example")
    client_port = c.sock.getsockname()[1]
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    (s,) = r.up.sessions
    assert s.xclient == [{
        "ADDR": "127.0.0.1", "PORT": str(client_port), "NAME": "[UNAVAILABLE]",
        "HELO": "client.example", "PROTO": "ESMTP",
        "DESTADDR": "127.0.0.1", "DESTPORT": str(r.port),
    }]
    # Under TLS only, before any transaction; then the session starts over with the
    # client's name in EHLO (the upstream takes it as the client's HELO).
    assert s.verbs(tls=False) == [b"EHLO", b"STARTTLS"]
    assert s.verbs(tls=True)[:3] == [b"EHLO", b"XCLIENT", b"EHLO"]
    assert s.helo_names[-1] == ("EHLO", "client.example")
    assert len(r.up.messages) == 1


def test_xclient_not_offered_fails_closed(relay_factory):
    r = relay_factory(upstream={}, upstream_cfg={"forward_client": "xclient"})
    c = r.session(tls=True)
    reply = c.cmd("MAIL FROM:<a@x.test>")
    assert (reply.code, reply.enhanced) == (451, "4.7.0"), reply
    assert "forward_client" not in reply.text and "XCLIENT" not in reply.text  # I14
    c.quit()
    assert r.up.verbs().count(b"MAIL") == 0
    assert b"XCLIENT" not in r.up.raw_post_tls


@pytest.mark.parametrize("refusal", ["550 5.7.0 Error: insufficient authorization", "501 5.5.4 no", "421 4.3.0 bye"])
def test_xclient_refused_fails_closed(relay_factory, refusal):
    r = xclient_relay(relay_factory, "xclient", xclient_reply=refusal)
    c = r.session(tls=True)
    reply = c.cmd("MAIL FROM:<a@x.test>")
    assert (reply.code, reply.enhanced) == (451, "4.7.0"), reply
    c.quit()
    assert r.up.verbs().count(b"MAIL") == 0


def test_a_hostile_helo_cannot_inject_attributes(relay_factory):
    r = xclient_relay(relay_factory)
    c = r.client()
    c.start(tls=True, name="evil=x+LOGIN=root")
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    (s,) = r.up.sessions
    (attrs,) = s.xclient
    assert attrs["HELO"] == "evil=x+LOGIN=root" and "LOGIN" not in attrs, attrs
    xclient_line = [l for t, l in s.commands if l.startswith(b"XCLIENT")][0]
    assert b"HELO=evil+3Dx+2BLOGIN+3Droot " in xclient_line, xclient_line
    # Non-ASCII: xtext in XCLIENT, the address literal in the EHLO that follows.
    r2 = xclient_relay(relay_factory)
    c = r2.client()
    c.start(tls=True, name="grüße.example")
    assert send_one(c).code == 250
    c.quit()
    assert r2.up.wait_closed()
    (s,) = r2.up.sessions
    assert s.xclient[0]["HELO"] == "grüße.example"
    assert b"HELO=gr+C3+BC+C3+9Fe.example" in s.raw_post_tls
    assert s.helo_names[-1] == ("EHLO", "[127.0.0.1]")


def test_helo_client_opens_the_upstream_and_is_smtp(relay_factory):
    r = xclient_relay(relay_factory)
    c = r.client()
    assert c.greeting().code == 220
    assert r.up.sessions == []
    h = c.cmd("HELO old.example")
    assert h.code == 250 and h.lines == ["sealgate.test"], h
    assert r.up.wait_for(lambda: len(r.up.sessions) == 1 and r.up.sessions[0].xclient)
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    (s,) = r.up.sessions
    assert s.xclient[0]["PROTO"] == "SMTP" and s.xclient[0]["HELO"] == "old.example"
    assert s.helo_names[-1] == ("HELO", "old.example")


def test_session_reused_for_the_same_client_and_renewed_for_another_name(relay_factory):
    r = xclient_relay(relay_factory)
    c = r.client()
    c.start(tls=True, name="one.example")
    assert send_one(c).code == 250
    assert send_one(c).code == 250
    assert len(r.up.sessions) == 1, "same identity: the upstream session is reused"
    e = c.ehlo("two.example")
    assert e.code == 250
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    assert [x["HELO"] for s in r.up.sessions for x in s.xclient] == ["one.example", "two.example"]
    # Every transaction ran on a session told the name the client used for it.
    names = {s.id: s.xclient[0]["HELO"] for s in r.up.sessions}
    assert [names[t.session] for t in r.up.messages] == ["one.example", "one.example", "two.example"]


def test_login_is_forwarded_when_a_new_session_is_needed(relay_factory):
    r = xclient_relay(relay_factory, auth={"user": "alice@x.test", "password": "pw"})
    c = r.client()
    c.start(tls=True, name="one.example")
    token = base64.b64encode(b"\0alice@x.test\0pw").decode()
    assert c.cmd(f"AUTH PLAIN {token}").code == 235
    assert send_one(c).code == 250
    assert c.ehlo("two.example").code == 250
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    first, second = r.up.sessions
    assert "LOGIN" not in first.xclient[0] and first.auth == [("PLAIN", "alice@x.test", True)]
    assert second.xclient[0]["LOGIN"] == "alice@x.test" and second.auth == []
    assert b"pw" not in second.raw_post_tls


def test_xforward_before_every_mail(relay_factory):
    r = relay_factory(upstream={"xforward": POSTFIX_XFORWARD}, upstream_cfg={"forward_client": "xforward"})
    c = r.client()
    c.start(tls=True, name="client.example")
    port = c.sock.getsockname()[1]
    assert send_one(c).code == 250
    assert c.cmd("RSET").code == 250
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    assert len(r.up.messages) == 2
    for t in r.up.messages:
        assert t.xforward["ADDR"] == "127.0.0.1" and t.xforward["PORT"] == str(port)
        assert t.xforward["HELO"] == "client.example" and t.xforward["PROTO"] == "ESMTP"
        assert t.xforward["NAME"] == "[UNAVAILABLE]" and t.xforward["SOURCE"] == "REMOTE"
        assert t.xforward["IDENT"], t.xforward
    verbs = r.up.verbs(tls=True)
    assert all(verbs[i - 1] == b"XFORWARD" for i, v in enumerate(verbs) if v == b"MAIL"), verbs
    assert b"XCLIENT" not in r.up.raw


@pytest.mark.parametrize("upstream", [{}, {"xforward": POSTFIX_XFORWARD, "xforward_reply": "550 5.7.0 no"}])
def test_xforward_not_offered_or_refused_fails_closed(relay_factory, upstream):
    r = relay_factory(upstream=upstream, upstream_cfg={"forward_client": "xforward"})
    c = r.session(tls=True)
    reply = c.cmd("MAIL FROM:<a@x.test>")
    assert (reply.code, reply.enhanced) == (451, "4.7.0"), reply
    c.quit()
    assert r.up.verbs().count(b"MAIL") == 0


def test_none_sends_neither(relay_factory):
    r = relay_factory(upstream={"xclient": POSTFIX_XCLIENT, "xforward": POSTFIX_XFORWARD},
                      upstream_cfg={"forward_client": "none"})
    c = r.session(tls=True)
    assert send_one(c).code == 250
    c.quit()
    assert r.up.wait_closed()
    assert b"XCLIENT" not in r.up.raw and b"XFORWARD" not in r.up.raw


@pytest.mark.parametrize("mode", ["xclient", "xforward"])
def test_a_queued_copy_is_delivered_later_as_the_same_client(relay_factory, mode, tmp_path):
    """A later copy refused once is queued (issue 10) and delivered by the queue runner in
    a session of its own: the upstream is told the original client there too."""
    import subprocess
    from conftest import SEALGATE_BIN
    from support.pki import make_smime_pki
    spki = make_smime_pki(str(tmp_path / "pki"))
    upstream = {"dsn": True, "final_reply": ["250 2.0.0 first", "451 4.3.0 try later", "250 2.0.0 retried"]}
    upstream["xclient" if mode == "xclient" else "xforward"] = (
        POSTFIX_XCLIENT if mode == "xclient" else POSTFIX_XFORWARD)
    r = relay_factory(upstream=upstream, upstream_cfg={"forward_client": mode},
                      extra={"policy": {"encrypt": "opportunistic", "sign": False},
                             "queue": {"retry_initial": 1, "retry_max": 2, "scan_interval": 1}})
    p = subprocess.run([SEALGATE_BIN, "keys", "import", spki["rsa1.pem"], "--config", str(r.sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    c = r.client(timeout=30)
    c.start(tls=True, name="client.example")
    port = c.sock.getsockname()[1]
    assert c.cmd("MAIL FROM:<alice@example.org>").code == 250
    assert c.cmd("RCPT TO:<bob@example.org>").code == 250
    assert c.cmd("RCPT TO:<nokey@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(b"From: alice@example.org\r\nTo: bob@example.org, nokey@example.org\r\nSubject: q\r\n\r\nx\r\n"))
    final = c.reply(timeout=30)
    assert final.code == 250 and "queued" in final.text, final
    c.quit()
    assert r.up.wait_for(lambda: len(r.up.messages) == 3, timeout=20), r.up.messages
    retried = r.up.messages[2]
    (runner,) = [s for s in r.up.sessions if s.id == retried.session]
    assert runner.id != r.up.messages[0].session, "delivered by the queue, in a session of its own"
    if mode == "xclient":
        x = runner.xclient[0]
        assert (x["ADDR"], x["PORT"], x["HELO"]) == ("127.0.0.1", str(port), "client.example"), x
    else:
        assert (retried.xforward["ADDR"], retried.xforward["PORT"], retried.xforward["HELO"]) == (
            "127.0.0.1", str(port), "client.example"), retried.xforward
