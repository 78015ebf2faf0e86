"""Black-box tests of the sealgate binary: a real client on one side, the scriptable
upstream (support/upstream.py) on the other.  Assertions are on the BYTES the upstream
received, not only on the reply codes the client saw.

Reply codes asserted are the ones of the relay contract (quoted in each test).
Validate the tests themselves with the Python reference model:
    SEALGATE_BIN=tests/e2e/support/refproxy.sh python3 -m pytest tests/e2e/test_relay.py
and prove they can fail with its deliberate bugs: REFPROXY_BUGS=no_bare_check,... (see refproxy.py).
"""
from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import time

import pytest

from support.clients import ConnectionClosed, RawSMTP, Reply, dot_stuff, ehlo_keywords, swaks_available

MSG = (b"From: Alice <alice@x.test>\r\n"
       b"To: Bob <bob@y.test>\r\n"
       b"Subject: relay test\r\n"
       b"Message-ID: <relay-test@x.test>\r\n"
       b"\r\n"
       b"Hello Bob,\r\n"
       b"\r\n"
       b"this is a test.\r\n")


# --------------------------------------------------------------------------- helpers
def bare_cr_lf(data: bytes) -> list:
    """Offsets of bare CR (not followed by LF) and bare LF (not preceded by CR)."""
    bad = []
    for m in re.finditer(rb"\r(?!\n)|(?<!\r)\n", data):
        bad.append((m.start(), data[max(0, m.start() - 10):m.start() + 10]))
    return bad


def assert_no_bare_cr_lf(up) -> None:
    for s in up.sessions:
        for part in (bytes(s.raw_pre_tls), bytes(s.raw_post_tls)):
            bad = bare_cr_lf(part)
            assert not bad, f"upstream received bare CR/LF at {bad[:5]}"


def assert_no_unstuffed_dot_line(t) -> None:
    """The stuffed data stream may contain '.\\r\\n' only as its terminator."""
    body = t.raw_data[:-3] if t.raw_data.endswith(b".\r\n") else t.raw_data
    lines = body.split(b"\r\n")
    for i, line in enumerate(lines[:-1]):
        assert line != b".", f"unstuffed '.' line #{i} inside the data sent upstream"


def upstream_mail_commands(up) -> list:
    return [c for c in up.commands() if c[:5].upper() == b"MAIL "]


def transact(c: RawSMTP, sender: str, rcpts: list, body: bytes, timeout: float = 15) -> Reply:
    r = c.cmd(f"MAIL FROM:<{sender}>")
    assert r.code == 250, r
    for rc in rcpts:
        r = c.cmd(f"RCPT TO:<{rc}>")
        assert r.code == 250, r
    r = c.cmd("DATA")
    assert r.code == 354, r
    c.send(dot_stuff(body))
    return c.reply(timeout=timeout)


def read_all_replies(c: RawSMTP, timeout: float = 3.0) -> tuple[list, bool]:
    """Read replies until the server closes or is quiet for `timeout`. Returns (replies, closed)."""
    out = []
    while True:
        try:
            out.append(c.reply(timeout=timeout))
        except ConnectionClosed:
            return out, True
        except (socket.timeout, TimeoutError):
            return out, False
        except OSError:
            return out, True


def assert_still_serving(relay) -> None:
    with relay.client(timeout=5) as c:
        assert c.greeting().code == 220
        assert c.ehlo().code == 250
        c.quit()


def assert_4xx(r: Reply, code: int | None = None, enhanced_prefix: str | None = None) -> None:
    assert 400 <= r.code < 500, f"expected a 4xx reply, got {r!r}"
    if code is not None:
        assert r.code == code, f"expected {code}, got {r!r}"
    if enhanced_prefix is not None:
        assert r.enhanced and r.enhanced.startswith(enhanced_prefix), \
            f"expected enhanced status {enhanced_prefix}*, got {r!r}"


# --------------------------------------------------------------------------- basic relay
def test_plain_relay_starttls_both_sides(relay):
    refused = relay.send("alice@x.test", ["bob@y.test"], MSG)
    assert refused == {}
    up = relay.up
    assert up.wait_for(lambda: len(up.messages) == 1)
    (t,) = up.messages
    assert t.tls, "message travelled upstream without TLS"
    assert t.mail_from == b"alice@x.test" and t.rcpt_addrs == [b"bob@y.test"]
    assert t.content == MSG
    assert t.raw_data == dot_stuff(MSG)
    s = up.sessions[t.session]
    # before TLS the upstream only ever saw EHLO and STARTTLS
    assert s.verbs(tls=False) == [b"EHLO", b"STARTTLS"], s.commands
    assert b"alice@x.test" not in bytes(s.raw_pre_tls)
    assert s.tls_version in ("TLSv1.2", "TLSv1.3")
    assert_no_bare_cr_lf(up)


def test_ehlo_advertisement(relay_factory):
    r = relay_factory()
    with r.client() as c:
        assert c.greeting().code == 220
        kw = ehlo_keywords(c.ehlo())
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS"):
            assert k in kw, f"{k} missing before TLS: {kw}"
        assert kw["SIZE"] == "52428800"
        assert "AUTH" not in kw, "AUTH advertised before TLS"
        assert "SMTPUTF8" not in kw and "DSN" not in kw, "advertised although upstream lacks them"
        assert c.starttls().code == 220
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw, "STARTTLS advertised after TLS"
        assert "AUTH" not in kw, "AUTH advertised though upstream offers none"
        assert c.cmd("VRFY bob").code == 252
        c.quit()
    r2 = relay_factory(upstream={"smtputf8": True, "dsn": True, "auth": {"user": "u", "password": "p"}})
    with r2.client() as c:
        c.greeting()
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" not in kw
        c.starttls()
        kw = ehlo_keywords(c.ehlo())
        assert "SMTPUTF8" in kw and "DSN" in kw, kw
        assert "AUTH" in kw and set(kw["AUTH"].upper().split()) >= {"PLAIN", "LOGIN"}, kw
        c.quit()


DOT_BODIES = {
    "leading-dots": b".starts with a dot\r\n..two dots\r\n...three\r\n. space\r\n",
    "lone-dot-line": b"before\r\n.\r\nafter\r\n",
    "dot-first-line": b".\r\n.\r\n",
    "ends-with-dot-line": b"text\r\n.\r\n",
    "dot-crlf-dot-in-middle": b"a\r\n.\r\n.\r\nb\r\n..\r\n",
}


@pytest.mark.parametrize("name", list(DOT_BODIES))
def test_dot_transparency_raw(relay, name):
    body = MSG + DOT_BODIES[name]
    with relay.session() as c:
        r = transact(c, "alice@x.test", ["bob@y.test"], body)
        assert r.code == 250, r
        c.quit()
    (t,) = relay.up.messages
    assert t.content == body
    assert t.raw_data == dot_stuff(body)
    assert_no_unstuffed_dot_line(t)


def test_dot_transparency_smtplib(relay):
    body = MSG + b".\r\n..\r\n.x\r\nend\r\n"
    assert relay.send("alice@x.test", ["bob@y.test"], body) == {}
    (t,) = relay.up.messages
    assert t.content == body


@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_dot_transparency_swaks_pipelined(relay):
    r = relay.swaks("--from", "alice@x.test", "--to", "bob@y.test", "--pipeline",
                    "--body", "line\n.\n..\n.dot\nlast")
    assert r.rc == 0, r.out + r.err
    (t,) = relay.up.messages
    assert b"\r\n\r\nline\r\n.\r\n..\r\n.dot\r\nlast\r\n" in t.content, t.content
    assert b"\r\nline\r\n..\r\n...\r\n..dot\r\nlast\r\n" in t.raw_data


def test_bdat_from_client_relayed_as_stuffed_data(relay):
    body = MSG + b".\r\n.dot\r\n"
    with relay.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<bob@y.test>").code == 250
        half = len(body) // 2
        c.send(f"BDAT {half}\r\n".encode() + body[:half])
        assert c.reply().code == 250
        c.send(f"BDAT {len(body) - half} LAST\r\n".encode() + body[half:])
        assert c.reply(timeout=15).code == 250
        c.quit()
    (t,) = relay.up.messages
    assert t.content == body
    assert t.raw_data == dot_stuff(body) or t.data_command.startswith(b"BDAT")


@pytest.mark.parametrize("ending", [b"RSET", b"EHLO again.test", b"HELO again.test"])
def test_aborted_bdat_content_never_reaches_the_next_message(relay, ending):
    """SECURITY.md I11: a chunk of an abandoned transaction is not prepended to the next one."""
    leak = b"X-Leak: first transaction's secret content\r\n"
    second = b"Subject: second\r\n\r\nsecond body\r\n"
    with relay.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<first@y.test>").code == 250
        c.send(f"BDAT {len(leak)}\r\n".encode() + leak)
        assert c.reply().code == 250
        assert c.cmd(ending.decode()).code == 250
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<second@y.test>").code == 250
        c.send(f"BDAT {len(second)} LAST\r\n".encode() + second)
        assert c.reply(timeout=15).code == 250
        c.quit()
    (m,) = relay.up.messages
    assert m.rcpt_addrs == [b"second@y.test"]
    assert m.content == second, m.content
    assert b"X-Leak" not in bytes(relay.up.sessions[-1].raw_post_tls)


@pytest.mark.parametrize("line", [b"BDAT 10 LAST ", b"BDAT  10", b"BDAT ten"])
def test_unparsable_bdat_closes_the_connection(relay, line):
    with relay.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<bob@y.test>").code == 250
        c.send(line + b"\r\nMAIL FROM:<smuggled@x.test>\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (521, "5.5.4"), r
        assert c.is_closed(timeout=10)
    assert not relay.up.messages
    assert all(b"smuggled" not in bytes(s.raw_post_tls) for s in relay.up.sessions)


def test_domainless_postmaster_is_accepted_and_passed_on(relay):
    """RFC 5321 4.5.1: RCPT TO:<Postmaster> needs no domain."""
    with relay.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<Postmaster>").code == 250
        c.quit()
    assert b"RCPT TO:<Postmaster>" in relay.up.commands()


# --------------------------------------------------------------------------- envelope
def test_envelope_params_passed_on_exactly(relay_factory):
    r = relay_factory(upstream={"dsn": True, "smtputf8": True})
    mail_params = b"SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=QQ314159+2Bx"
    rcpt_params = [b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob@y.test", b"NOTIFY=NEVER",
                   b"ORCPT=rfc822;carol+2Bx@y.test"]
    with r.session() as c:
        assert c.cmd(b"MAIL FROM:<alice@x.test> " + mail_params).code == 250
        for i, p in enumerate(rcpt_params):
            assert c.cmd(b"RCPT TO:<rcpt%d@y.test> " % i + p).code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        assert c.reply(timeout=15).code == 250
        c.quit()
    (t,) = r.up.messages
    assert t.mail_from == b"alice@x.test"
    assert t.mail_params == mail_params.split(b" ")
    assert [x.split(b">", 1)[1].strip() for x in t.rcpts] == rcpt_params
    assert t.rcpt_addrs == [b"rcpt0@y.test", b"rcpt1@y.test", b"rcpt2@y.test"]


def test_smtputf8_passed_on(relay_factory):
    r = relay_factory(upstream={"smtputf8": True})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<ålice@x.test> SMTPUTF8 BODY=8BITMIME".encode()).code == 250
        assert c.cmd("RCPT TO:<bøb@y.test>".encode()).code == 250
        assert c.cmd("DATA").code == 354
        body = MSG + "grüße\r\n".encode()
        c.send(dot_stuff(body))
        assert c.reply(timeout=15).code == 250
        c.quit()
    (t,) = r.up.messages
    assert t.mail_from == "ålice@x.test".encode() and t.mail_params == [b"SMTPUTF8", b"BODY=8BITMIME"]
    assert t.rcpt_addrs == ["bøb@y.test".encode()]
    assert t.content == body


def test_null_sender_and_smtplib_params(relay_factory):
    r = relay_factory(upstream={"dsn": True})
    assert r.send("", ["bob@y.test"], MSG, mail_options=["BODY=8BITMIME", "RET=FULL"],
                  rcpt_options=["NOTIFY=FAILURE"]) == {}
    (t,) = r.up.messages
    assert t.mail_from == b""
    assert b"BODY=8BITMIME" in t.mail_params and b"RET=FULL" in t.mail_params
    assert t.rcpts[0].endswith(b" NOTIFY=FAILURE")


# --------------------------------------------------------------------------- upstream verdicts
def test_rcpt_550_for_one_recipient_others_still_go(relay_factory):
    r = relay_factory(upstream={"rcpt_replies": {"bad@y.test": "550 5.1.1 <bad@y.test>: user unknown",
                                                 "later@y.test": "450 4.2.1 try later"}})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        r1 = c.cmd("RCPT TO:<ok1@y.test>")
        r2 = c.cmd("RCPT TO:<bad@y.test>")
        r3 = c.cmd("RCPT TO:<later@y.test>")
        r4 = c.cmd("RCPT TO:<ok2@y.test>")
        assert (r1.code, r2.code, r3.code, r4.code) == (250, 550, 450, 250)
        assert r2.enhanced == "5.1.1" and r3.enhanced == "4.2.1"
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        assert c.reply(timeout=15).code == 250
        c.quit()
    (t,) = r.up.messages
    assert t.rcpt_addrs == [b"ok1@y.test", b"bad@y.test", b"later@y.test", b"ok2@y.test"]
    assert t.rcpt_codes == [250, 550, 450, 250]
    assert t.content == MSG


def test_rcpt_550_smtplib(relay_factory):
    r = relay_factory(upstream={"rcpt_replies": {"bad@y.test": "550 5.1.1 no such user"}})
    refused = r.send("alice@x.test", ["good@y.test", "bad@y.test"], MSG)
    assert list(refused) == ["bad@y.test"] and refused["bad@y.test"][0] == 550
    assert len(r.up.messages) == 1


def test_all_recipients_rejected_no_data_upstream(relay_factory):
    r = relay_factory(upstream={"rcpt_reply": "550 5.1.1 nobody here"})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<a@y.test>").code == 550
        d = c.cmd("DATA")
        assert d.code >= 500 or d.code == 354
        if d.code == 354:
            c.send(dot_stuff(MSG))
            assert c.reply(timeout=15).code >= 400
        c.quit()
    assert r.up.messages == []


@pytest.mark.parametrize("final", ["451 4.3.0 try again later", "554 5.7.1 rejected by policy",
                                   "452 4.3.1 insufficient storage"])
def test_final_reply_after_dot_passed_to_client(relay_factory, final):
    r = relay_factory(upstream={"final_reply": final})
    with r.session() as c:
        rep = transact(c, "alice@x.test", ["bob@y.test"], MSG)
        assert rep.code == int(final[:3]), rep
        assert rep.enhanced == final.split()[1], rep
        c.quit()
    (t,) = r.up.messages
    assert t.content == MSG


def test_upstream_mail_rejection_passed(relay_factory):
    r = relay_factory(upstream={"mail_reply": "451 4.7.1 greylisted"})
    with r.session() as c:
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert rep.code == 451 and rep.enhanced == "4.7.1", rep
        c.quit()


def test_upstream_data_command_rejected_never_250(relay_factory):
    r = relay_factory(upstream={"data_reply": "554 5.5.1 no DATA for you"})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<bob@y.test>").code == 250
        d = c.cmd("DATA")
        if d.code == 354:
            c.send(dot_stuff(MSG))
            final = c.reply(timeout=15)
            assert final.code >= 400, f"client got {final!r} though upstream refused DATA"
        else:
            assert d.code >= 400
        c.quit()
    assert r.up.messages == []


@pytest.mark.parametrize("behaviour", ["silent", "close"])
def test_no_reply_after_dot_gives_4xx(relay_factory, behaviour):
    r = relay_factory(upstream={"final_reply": behaviour}, limits={"upstream_timeout": 2})
    with r.session(timeout=20) as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<bob@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        t0 = time.monotonic()
        c.send(dot_stuff(MSG))
        try:
            rep = c.reply(timeout=15)
        except ConnectionClosed:
            pytest.fail("sealgate closed the connection without a reply (client must get 4xx)")
        elapsed = time.monotonic() - t0
        assert rep.code != 250, f"250 although the upstream never confirmed: {rep!r}"
        assert_4xx(rep)
        assert_4xx(rep, 451, "4.4.")
        if behaviour == "silent":
            assert elapsed >= 1.5, f"answered after {elapsed:.1f}s, before upstream_timeout=2s"
        c.close()
    assert r.up.messages and r.up.messages[0].content == MSG


def test_slow_rcpt_reply_times_out_with_4xx(relay_factory):
    r = relay_factory(upstream={"delays": {"rcpt": 8}}, limits={"upstream_timeout": 2})
    with r.session(timeout=20) as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        t0 = time.monotonic()
        rep = c.cmd("RCPT TO:<bob@y.test>")
        assert_4xx(rep, 451, "4.4.")
        assert time.monotonic() - t0 < 7
        c.close()


# --------------------------------------------------------------------------- forced TLS upstream
UPSTREAM_TLS_FAILURES = {
    # name: (upstream script, sealgate [upstream] overrides, expected code, enhanced prefix)
    "no-starttls": ({"advertise_starttls": False}, {}, 454, "4.7.0"),
    "starttls-454": ({"starttls_reply": "454 4.7.0 TLS not available"}, {}, 454, "4.7.0"),
    "starttls-502": ({"starttls_reply": "502 5.5.1 not implemented"}, {}, 454, "4.7.0"),
    "starttls-421": ({"starttls_reply": "421 4.3.2 shutting down"}, {}, None, None),
    "expired-cert": ({"cert": "expired"}, {}, 451, "4.7.5"),
    "wrong-host": ({"cert": "wrong_host"}, {}, 451, "4.7.5"),
    "self-signed": ({"cert": "self_signed"}, {}, 451, "4.7.5"),
    "untrusted-ca": ({}, {"ca_file": "other_ca"}, 451, "4.7.5"),
    "wrong-server-name": ({}, {"server_name": "mail.example.org"}, 451, "4.7.5"),
    "injected-after-220": ({"starttls_inject": "250-PIPELINING\\r\\n250 injected\\r\\n"}, {}, 454, "4.7.0"),
    "tls-1.1-only": ({"tls_min_version": "1.0", "tls_max_version": "1.1"}, {}, 454, "4.7.0"),
}


@pytest.mark.parametrize("name", list(UPSTREAM_TLS_FAILURES))
def test_upstream_tls_failure_gives_4xx_and_no_mail_upstream(relay_factory, pki, name):
    """I3: plaintext never reaches the upstream; the client gets 4xx at MAIL FROM
    (454 4.7.0 for STARTTLS problems, 451 4.7.5 for certificate/host name problems)."""
    script, up_over, code, enh = UPSTREAM_TLS_FAILURES[name]
    script = dict(script)
    if "cert" in script:
        script["key"] = pki[script["cert"] + "_key"]
        script["cert"] = pki[script["cert"]]
    up_over = {k: (pki[v] if k == "ca_file" else v) for k, v in up_over.items()}
    r = relay_factory(upstream=script, upstream_cfg=up_over, limits={"upstream_timeout": 3})
    with r.client(timeout=15) as c:
        assert c.greeting().code == 220
        assert c.ehlo().code == 250
        assert c.starttls().code == 220
        assert c.ehlo().code == 250
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert rep.code != 250, f"MAIL accepted although the upstream TLS setup failed ({name})"
        assert_4xx(rep)
        # no fallback on retry either
        again = c.cmd("MAIL FROM:<alice@x.test>")
        assert again.code != 250, again
        rc = c.cmd("RCPT TO:<bob@y.test>")
        assert rc.code != 250, rc
        c.quit()
    r.up.wait_closed(3)
    assert upstream_mail_commands(r.up) == [], "a MAIL command reached the upstream"
    assert b"alice@x.test" not in r.up.raw and b"bob@y.test" not in r.up.raw
    assert r.up.transactions == []
    if name == "injected-after-220":
        for s in r.up.sessions:
            assert s.verbs(tls=False)[-1:] == [b"STARTTLS"], f"plaintext after STARTTLS: {s.commands}"
            assert bytes(s.raw_post_tls) == b"", f"data sent over TLS after injection: {bytes(s.raw_post_tls)!r}"
    if code is not None:
        assert_4xx(rep, code, enh)


def test_upstream_unreachable_gives_451_4_4(sealgate_factory, pki):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    sg = sealgate_factory(f"127.0.0.1:{port}", limits={"connect_timeout": 2, "upstream_timeout": 2})
    with RawSMTP("127.0.0.1", sg.port, ca_file=pki["ca"], timeout=15) as c:
        c.start()
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert_4xx(rep, 451, "4.4.")
        c.quit()


def test_upstream_never_greets_gives_451_4_4(relay_factory):
    r = relay_factory(upstream={"delays": {"greeting": 20}},
                      limits={"connect_timeout": 2, "upstream_timeout": 2})
    with r.client(timeout=20) as c:
        c.start()
        t0 = time.monotonic()
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert_4xx(rep, 451, "4.4.")
        assert time.monotonic() - t0 < 10
        c.quit()
    assert upstream_mail_commands(r.up) == []


# --------------------------------------------------------------------------- smuggling (I1)
SMUGGLE = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-crcrlf": b"\r\n.\r\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "bare-lf-only": b"\nstill text\r\n",
}
SECOND = (b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n"
          b"From: ceo@y.test\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n")


def _smuggle_session(r, payload: bytes):
    c = r.session(timeout=10)
    assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
    assert c.cmd("RCPT TO:<bob@y.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(payload)
    replies, closed = read_all_replies(c, timeout=4)
    c.close()
    r.up.wait_closed(3)
    return replies, closed


def _assert_framing_invariants(up):
    froms = [t.mail_from for t in up.transactions]
    assert b"smuggled@evil.test" not in froms, f"smuggled second transaction reached upstream: {froms}"
    assert len(up.messages) <= 1, "more than one message upstream for one client transaction"
    assert_no_bare_cr_lf(up)
    for t in up.transactions:
        assert_no_unstuffed_dot_line(t)


@pytest.mark.parametrize("variant", list(SMUGGLE))
def test_smuggling_bare_cr_lf_rejected(relay_factory, variant):
    r = relay_factory(upstream={"data_end": "lenient"})  # upstream that WOULD fall for it
    payload = MSG + b"first message" + SMUGGLE[variant] + SECOND
    replies, closed = _smuggle_session(r, payload)
    codes = [x.code for x in replies]
    _assert_framing_invariants(r.up)
    assert 250 not in codes, f"client got 250 for a message with bare CR/LF: {replies}"
    # contract: 521 5.5.2, connection closed, nothing reaches the upstream
    assert replies and replies[0].code == 521 and replies[0].enhanced == "5.5.2", replies
    assert closed, "connection not closed after 521"
    assert r.up.messages == [] and b"DATA" not in [v for v in r.up.verbs()], \
        "something was sent upstream for a rejected message"
    assert_still_serving(r)


@pytest.mark.parametrize("variant", [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n\x00.\x00\r\n"])
def test_smuggling_nul_around_dot(relay_factory, variant):
    r = relay_factory(upstream={"data_end": "lenient"})
    payload = MSG + b"first message" + variant + SECOND
    replies, closed = _smuggle_session(r, payload)
    _assert_framing_invariants(r.up)
    # The pipelined-looking text is content of the one transaction, and a message with a NUL
    # is refused whole (no BINARYMIME): nothing reaches the upstream.
    assert [(x.code, x.enhanced) for x in replies] == [(554, "5.6.0")], replies
    assert not closed
    assert r.up.messages == []
    assert_still_serving(r)


def test_pipelined_second_transaction_after_proper_end(relay):
    """Legitimate: the proper end of data followed by a second transaction in one write."""
    body2 = b"Subject: second\r\n\r\nsecond body\r\n"
    with relay.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        assert c.cmd("RCPT TO:<bob@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG) + b"MAIL FROM:<second@x.test>\r\nRCPT TO:<carol@y.test>\r\nDATA\r\n")
        codes = [x.code for x in c.replies(4, timeout=15)]
        assert codes == [250, 250, 250, 354], codes
        c.send(dot_stuff(body2))
        assert c.reply(timeout=15).code == 250
        c.quit()
    ms = relay.up.messages
    assert [(m.mail_from, m.rcpt_addrs, m.content) for m in ms] == [
        (b"alice@x.test", [b"bob@y.test"], MSG), (b"second@x.test", [b"carol@y.test"], body2)]
    assert_no_bare_cr_lf(relay.up)


# --------------------------------------------------------------------------- pipelining
def test_pipelining_several_commands_in_one_write(relay_factory):
    r = relay_factory(upstream={"rcpt_replies": {"bad@y.test": "550 5.1.1 unknown"}})
    body2 = b"Subject: two\r\n\r\n.second\r\n"
    with r.session() as c:
        c.send(b"MAIL FROM:<alice@x.test> BODY=8BITMIME\r\nRCPT TO:<a@y.test>\r\n"
               b"RCPT TO:<bad@y.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        codes = [x.code for x in c.replies(5, timeout=15)]
        assert codes == [250, 250, 550, 250, 354], codes
        c.send(dot_stuff(MSG) + b"RSET\r\nNOOP\r\nMAIL FROM:<two@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
        codes = [x.code for x in c.replies(6, timeout=15)]
        assert codes == [250, 250, 250, 250, 250, 354], codes
        c.send(dot_stuff(body2) + b"QUIT\r\n")
        codes = [x.code for x in c.replies(2, timeout=15)]
        assert codes == [250, 221], codes
    ms = r.up.messages
    assert [m.rcpt_addrs for m in ms] == [[b"a@y.test", b"bad@y.test", b"b@y.test"], [b"c@y.test"]]
    assert [m.content for m in ms] == [MSG, body2]


# --------------------------------------------------------------------------- limits (I9)
@pytest.mark.parametrize("total,ok", [(511, True), (512, True), (513, False)])
def test_command_line_limit(relay, total, ok):
    """max_command_line = 512, counted like RFC 5321 (including CRLF)."""
    line = b"NOOP " + b"x" * (total - 2 - 5)
    assert len(line) + 2 == total
    with relay.session() as c:
        rep = c.cmd(line)
        if ok:
            assert rep.code == 250, rep
        else:
            assert rep.code == 500 and rep.enhanced == "5.5.2", rep
        assert c.cmd("NOOP").code == 250  # session still usable
        c.quit()


def test_huge_command_line_bounded(relay):
    with relay.session() as c:
        c.send(b"NOOP " + b"A" * (2 * 1024 * 1024))
        time.sleep(0.5)
        try:
            c.send(b"\r\n")
            rep = c.reply(timeout=10)
            assert rep.code == 500, rep
        except (ConnectionClosed, OSError):
            pass  # closing on a flood is acceptable
    assert_still_serving(relay)


def _body_of_size(n: int) -> bytes:
    head = b"Subject: size\r\n\r\n"
    filler = n - len(head)
    lines = []
    while filler > 0:
        k = min(filler, 78)
        if k == 1:      # a lone CR/LF is impossible; put the byte into the previous line
            lines[-1] = b"y" + lines[-1]
            break
        lines.append(b"y" * (k - 2) + b"\r\n")
        filler -= k
    body = head + b"".join(lines)
    assert len(body) == n, (len(body), n)
    return body


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_message_size_limit(relay_factory, delta):
    limit = 10000
    r = relay_factory(limits={"max_message_size": limit})
    body = _body_of_size(limit + delta)
    with r.session() as c:
        assert ehlo_keywords(c.ehlo())["SIZE"] == str(limit)
        rep = transact(c, "alice@x.test", ["bob@y.test"], body)
        if delta <= 0:
            assert rep.code == 250, rep
        else:
            assert rep.code == 552 and rep.enhanced == "5.3.4", rep
        assert c.cmd("NOOP").code == 250
        c.quit()
    if delta <= 0:
        assert [m.content for m in r.up.messages] == [body]
    else:
        assert r.up.messages == [] and b"DATA" not in r.up.verbs(), "oversized message reached upstream"


@pytest.mark.parametrize("declared,ok", [(9999, True), (10000, True), (10001, False),
                                         (10 ** 20, False)])
def test_size_parameter_at_mail(relay_factory, declared, ok):
    r = relay_factory(limits={"max_message_size": 10000})
    with r.session() as c:
        rep = c.cmd(f"MAIL FROM:<alice@x.test> SIZE={declared}")
        if ok:
            assert rep.code == 250, rep
        else:
            assert rep.code == 552 and rep.enhanced == "5.3.4", rep
        c.quit()
    if not ok:
        assert upstream_mail_commands(r.up) == []


def test_size_minus_one_rejected_cleanly(relay_factory):
    r = relay_factory(limits={"max_message_size": 10000})
    with r.session() as c:
        rep = c.cmd("MAIL FROM:<alice@x.test> SIZE=-1")
        assert 500 <= rep.code < 600, rep
        c.quit()
    assert_still_serving(r)


@pytest.mark.parametrize("n", [4, 5, 6])
def test_recipient_limit(relay_factory, n):
    limit = 5
    r = relay_factory(limits={"max_recipients": limit})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@x.test>").code == 250
        reps = [c.cmd(f"RCPT TO:<r{i}@y.test>") for i in range(n)]
        for i, rep in enumerate(reps):
            if i < limit:
                assert rep.code == 250, (i, rep)
            else:
                assert rep.code == 452 and rep.enhanced == "4.5.3", (i, rep)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        assert c.reply(timeout=15).code == 250
        c.quit()
    (t,) = r.up.messages
    assert t.rcpt_addrs == [f"r{i}@y.test".encode() for i in range(min(n, limit))]


def test_connection_limit(relay_factory):
    r = relay_factory(limits={"max_connections": 2})
    c1, c2 = r.client(), r.client()
    assert c1.greeting().code == 220 and c2.greeting().code == 220
    c3 = r.client()
    rep = c3.reply(timeout=10)
    assert rep.code == 421 and rep.enhanced == "4.7.0", rep
    c3.expect_closed(5)
    c1.quit()
    # a slot frees up again
    deadline = time.monotonic() + 5
    while True:
        c4 = r.client()
        g = c4.reply(timeout=10)
        if g.code == 220 or time.monotonic() > deadline:
            break
        c4.close()
        time.sleep(0.2)
    assert g.code == 220, g
    c4.quit()
    c2.quit()


# --------------------------------------------------------------------------- inbound STARTTLS (I2)
def test_require_tls_rejects_mail_and_auth_before_starttls(relay_factory):
    r = relay_factory(upstream={"auth": {"user": "alice", "password": "pw"}},
                      listen=[{"require_tls": True}])
    with r.client() as c:
        assert c.greeting().code == 220
        assert c.ehlo().code == 250
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert rep.code == 530 and rep.enhanced == "5.7.0", rep
        rep = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0pw").decode())
        assert rep.code == 530 and rep.enhanced == "5.7.0", rep
        assert c.starttls().code == 220
        c.ehlo()
        rep = transact(c, "alice@x.test", ["bob@y.test"], MSG)
        assert rep.code == 250
        c.quit()
    assert len(upstream_mail_commands(r.up)) == 1
    assert [a for s in r.up.sessions for a in s.auth] == []


def test_plaintext_pipelined_behind_starttls_not_executed(relay):
    c = relay.client()
    c.greeting()
    c.ehlo()
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n")
    rep = c.reply()
    executed = False
    if rep.code == 220:
        try:
            c.starttls_handshake()   # also asserts that no reply to the plaintext MAIL arrived
            assert c.ehlo().code == 250
            r2 = c.cmd("RCPT TO:<bob@y.test>")
            assert r2.code == 503, f"RCPT accepted: the plaintext MAIL was executed ({r2!r})"
            assert transact(c, "alice@x.test", ["bob@y.test"], MSG).code == 250
            c.quit()
        except (ConnectionClosed, ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # dropping the connection is a safe answer too
    c.close()
    relay.up.wait_closed(3)
    assert b"evil@x.test" not in relay.up.raw and b"victim@y.test" not in relay.up.raw
    assert all(m.mail_from == b"alice@x.test" for m in relay.up.messages)


def test_second_starttls_refused(relay):
    with relay.session() as c:
        rep = c.cmd("STARTTLS")
        assert rep.code != 220 and rep.code >= 500, rep
        assert c.cmd("NOOP").code == 250
        c.quit()


# --------------------------------------------------------------------------- AUTH passthrough
CREDS = {"user": "alice@x.test", "password": "S3cr3t-Pa55w0rd!"}


def _auth_plain(user: str, pw: str) -> str:
    return base64.b64encode(f"\0{user}\0{pw}".encode()).decode()


def test_auth_passthrough_after_tls_only(relay_factory):
    r = relay_factory(upstream={"auth": CREDS}, env={"RUST_LOG": "trace"})
    good = _auth_plain(CREDS["user"], CREDS["password"])
    bad = _auth_plain(CREDS["user"], "wrong-" + CREDS["password"])
    with r.client() as c:            # before TLS
        c.greeting()
        assert "AUTH" not in ehlo_keywords(c.ehlo())
        rep = c.cmd("AUTH PLAIN " + good)
        assert rep.code >= 500 and rep.code != 235, rep
        c.quit()
    assert [a for s in r.up.sessions for a in s.auth] == [], "AUTH before TLS reached the upstream"
    with r.session() as c:           # wrong password
        rep = c.cmd("AUTH PLAIN " + bad)
        assert rep.code == 535 and rep.enhanced == "5.7.8", rep
        c.quit()
    with r.session() as c:           # right password, then a transaction on the same pairing
        rep = c.cmd("AUTH PLAIN " + good)
        assert rep.code == 235, rep
        assert transact(c, CREDS["user"], ["bob@y.test"], MSG).code == 250
        c.quit()
    with r.session() as c:           # AUTH LOGIN, interactive
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd(base64.b64encode(CREDS["user"].encode())).code == 334
        rep = c.cmd(base64.b64encode(CREDS["password"].encode()))
        assert rep.code == 235, rep
        c.quit()
    r.up.wait_closed(3)
    results = [ok for s in r.up.sessions for (_m, _u, ok) in s.auth]
    assert results == [False, True, True], r.up.to_json()
    (t,) = r.up.messages
    assert r.up.sessions[t.session].auth[-1][2] is True
    # credentials never in sealgate's logs (even at trace level)
    r.sg.stop()
    err = r.sg.stderr_text()
    for secret in (CREDS["password"], good, bad, "wrong-" + CREDS["password"],
                   base64.b64encode(CREDS["password"].encode()).decode()):
        assert secret not in err, f"secret {secret!r} found in sealgate stderr"


@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_auth_with_swaks(relay_factory):
    r = relay_factory(upstream={"auth": CREDS})
    ok = r.swaks("--from", CREDS["user"], "--to", "bob@y.test", "--auth", "PLAIN",
                 "--auth-user", CREDS["user"], "--auth-password", CREDS["password"])
    assert ok.rc == 0, ok.out + ok.err
    bad = r.swaks("--from", CREDS["user"], "--to", "bob@y.test", "--auth", "LOGIN",
                  "--auth-user", CREDS["user"], "--auth-password", "nope")
    assert bad.rc != 0 and "535" in bad.out, bad.out
    assert len(r.up.messages) == 1


# --------------------------------------------------------------------------- swaks basics
@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_swaks_relay_and_rcpt_rejection(relay_factory):
    r = relay_factory(upstream={"rcpt_replies": {"bad@y.test": "550 5.1.1 unknown"},
                                "final_reply": "250 2.0.0 Ok: queued as SWAKS1"})
    res = r.swaks("--from", "alice@x.test", "--to", "ok@y.test,bad@y.test",
                  "--header", "Subject: via swaks", "--body", "swaks body\n.\nend")
    assert res.rc == 0, res.out + res.err
    assert any("550 5.1.1" in l for l in res.server_lines()), res.out
    assert any("queued as SWAKS1" in l for l in res.server_lines()), res.out
    (t,) = r.up.messages
    assert t.rcpt_addrs == [b"ok@y.test", b"bad@y.test"] and t.rcpt_codes == [250, 550]
    assert b"\r\nswaks body\r\n.\r\nend\r\n" in t.content


# --------------------------------------------------------------------------- TLS modes
def test_implicit_tls_upstream(relay_factory):
    r = relay_factory(upstream={"tls": "implicit"}, upstream_cfg={"tls": "implicit"})
    assert r.send("alice@x.test", ["bob@y.test"], MSG) == {}
    (t,) = r.up.messages
    assert t.tls and t.content == MSG
    assert r.up.sessions[t.session].raw_pre_tls == b"", "plaintext bytes sent to an implicit-TLS upstream"


def test_implicit_tls_upstream_expired_cert(relay_factory, pki):
    r = relay_factory(upstream={"tls": "implicit", "cert": pki["expired"], "key": pki["expired_key"]},
                      upstream_cfg={"tls": "implicit"}, limits={"upstream_timeout": 3})
    with r.session() as c:
        rep = c.cmd("MAIL FROM:<alice@x.test>")
        assert_4xx(rep, 451, "4.7.5")
        c.quit()
    assert r.up.transactions == [] and r.up.raw_post_tls == b""


def test_implicit_tls_listener(relay_factory):
    r = relay_factory(listen=[{"tls": "implicit"}])
    with r.client(implicit_tls=True) as c:
        assert c.greeting().code == 220
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw
        assert transact(c, "alice@x.test", ["bob@y.test"], MSG).code == 250
        c.quit()
    assert [m.content for m in r.up.messages] == [MSG]


def test_plaintext_listener_still_forces_tls_upstream(relay_factory):
    r = relay_factory(listen=[{"tls": "none", "cert": None, "key": None}])
    with r.client() as c:
        assert c.greeting().code == 220
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw and "AUTH" not in kw
        assert transact(c, "alice@x.test", ["bob@y.test"], MSG).code == 250
        c.quit()
    (t,) = r.up.messages
    assert t.tls and r.up.sessions[t.session].verbs(tls=False) == [b"EHLO", b"STARTTLS"]
