"""Self-tests of the harness (no sealgate needed): the scriptable upstream records exact
bytes and misbehaves on demand; the test PKI has the properties the relay tests rely on."""
from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.clients import RawSMTP, ConnectionClosed, dot_stuff, ehlo_keywords, swaks, swaks_available
from support.upstream import Upstream

HERE = Path(__file__).resolve().parent


def ctx(pki):
    return ssl.create_default_context(cafile=pki["ca"])


def smtp(up, pki, tls=True, **kw):
    s = smtplib.SMTP("127.0.0.1", up.port, timeout=kw.pop("timeout", 5), local_hostname="client.test")
    s.ehlo()
    if tls:
        s.starttls(context=ctx(pki))
        s.ehlo()
    return s


def test_records_envelope_content_and_tls_split(upstream, pki):
    body = b"Subject: hi\r\n\r\nline one\r\n.leading dot\r\n.\r\n..two\r\nend\r\n"
    with smtp(upstream, pki) as s:
        s.sendmail("a@x.test", ["b@y.test", "c@y.test"], body, mail_options=["BODY=8BITMIME"])
    assert upstream.wait_closed()
    (t,) = upstream.transactions
    assert t.tls and t.complete
    assert t.mail.upper().startswith(b"MAIL FROM:<A@X.TEST>")  # smtplib sends lower-case verbs
    assert b"BODY=8BITMIME" in t.mail_params
    assert t.rcpt_addrs == [b"b@y.test", b"c@y.test"]
    assert t.content == body
    assert t.raw_data == dot_stuff(body)
    assert b"..leading dot\r\n..\r\n...two\r\n" in t.raw_data
    s0 = upstream.sessions[0]
    assert b"STARTTLS\r\n" in s0.raw_pre_tls and b"MAIL" not in s0.raw_pre_tls
    assert b"mail FROM:<a@x.test>" in s0.raw_post_tls
    assert s0.verbs(tls=False) == [b"EHLO", b"STARTTLS"]
    assert s0.tls_version in ("TLSv1.2", "TLSv1.3")


def test_per_recipient_and_final_replies(upstream_factory, pki):
    up = upstream_factory(rcpt_replies={"bad@y.test": "550 5.1.1 no such user"},
                          final_reply=["451 4.3.0 try later", "554 5.6.0 rejected", 250])
    with smtp(up, pki) as s:
        refused = None
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@x.test", ["ok@y.test", "bad@y.test"], b"x\r\n")
        assert e.value.smtp_code == 451
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@x.test", ["ok@y.test"], b"x\r\n")
        assert e.value.smtp_code == 554
        refused = s.sendmail("a@x.test", ["ok@y.test", "bad@y.test"], b"x\r\n")
        assert refused == {"bad@y.test": (550, b"5.1.1 no such user")}
    t = up.transactions
    assert [x.rcpt_codes for x in t] == [[250, 550], [250], [250, 550]]


def test_silent_and_close_after_dot(upstream_factory, pki):
    up = upstream_factory(final_reply=["silent"])
    c = RawSMTP("127.0.0.1", up.port, timeout=1, ca_file=pki["ca"])
    c.start()
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    assert c.cmd("RCPT TO:<b@y.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"hello\r\n.\r\n")
    with pytest.raises(socket.timeout):
        c.reply(timeout=0.7)
    assert up.transactions[0].complete and up.transactions[0].final_reply == "silent"
    c.close()

    up2 = upstream_factory(final_reply="close")
    c = RawSMTP("127.0.0.1", up2.port, timeout=2, ca_file=pki["ca"])
    c.start()
    c.cmd("MAIL FROM:<a@x.test>"), c.cmd("RCPT TO:<b@y.test>"), c.cmd("DATA")
    c.send(b"hello\r\n.\r\n")
    c.expect_closed(3)


def test_starttls_refusals_and_no_starttls(upstream_factory, pki):
    up = upstream_factory(advertise_starttls=False)
    c = RawSMTP("127.0.0.1", up.port, timeout=3)
    c.greeting()
    assert "STARTTLS" not in ehlo_keywords(c.ehlo())
    assert c.cmd("STARTTLS").code == 502
    c.close()
    for code in (454, 502):
        up = upstream_factory(starttls_reply=code)
        c = RawSMTP("127.0.0.1", up.port, timeout=3)
        c.greeting()
        assert "STARTTLS" in ehlo_keywords(c.ehlo())
        assert c.cmd("STARTTLS").code == code
        assert c.cmd("NOOP").code == 250   # still plaintext
        c.close()
    up = upstream_factory(starttls_reply="421 4.3.2 going away")
    c = RawSMTP("127.0.0.1", up.port, timeout=3)
    c.greeting(), c.ehlo()
    assert c.cmd("STARTTLS").code == 421
    c.expect_closed(3)


def test_injected_bytes_after_220_in_same_write(upstream_factory, pki):
    up = upstream_factory(starttls_inject="250-injected\\r\\n250 evil\\r\\n")
    s = socket.create_connection(("127.0.0.1", up.port), timeout=3)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO c\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    s.sendall(b"STARTTLS\r\n")
    time.sleep(0.3)
    data = s.recv(4096)  # one write: 220 + injection arrive together
    assert data == b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 evil\r\n"
    s.close()
    # a careful client (RawSMTP) refuses to handshake with leftovers
    c = RawSMTP("127.0.0.1", up.port, timeout=3, ca_file=pki["ca"])
    c.greeting(), c.ehlo()
    with pytest.raises(AssertionError, match="before TLS handshake"):
        time.sleep(0.2)
        c.starttls()
    c.close()


def test_pipelined_after_starttls_is_discarded_and_recorded(upstream, pki):
    c = RawSMTP("127.0.0.1", upstream.port, timeout=3, ca_file=pki["ca"])
    c.greeting(), c.ehlo()
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert c.reply().code == 220
    time.sleep(0.2)
    c.starttls_handshake()
    assert c.ehlo().code == 250
    assert c.cmd("RSET").code == 250
    c.quit()
    upstream.wait_closed()
    s = upstream.sessions[0]
    assert s.pipelined_before_tls == b"MAIL FROM:<evil@x.test>\r\n"
    assert upstream.transactions == []


def test_implicit_tls_and_auth(upstream_factory, pki):
    up = upstream_factory(tls="implicit", auth={"user": "alice", "password": "s3cret"})
    with smtplib.SMTP_SSL("127.0.0.1", up.port, timeout=5, context=ctx(pki)) as s:
        s.ehlo()
        assert "plain" in s.esmtp_features.get("auth", "").lower()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice", "wrong")
    with smtplib.SMTP_SSL("127.0.0.1", up.port, timeout=5, context=ctx(pki)) as s:
        s.ehlo()
        s.login("alice", "s3cret")
    up2 = upstream_factory(auth={"user": "alice", "password": "s3cret"})
    with smtp(up2, pki, tls=False) as s:
        assert not s.has_extn("auth")  # AUTH only after TLS
        s.starttls(context=ctx(pki))
        s.ehlo()
        assert s.has_extn("auth")
        s.login("alice", "s3cret")
    # smtplib tries PLAIN then LOGIN with the wrong password, then succeeds in session 2
    assert [a[2] for a in up.sessions[0].auth] == [False, False]
    assert [a[2] for a in up.sessions[1].auth] == [True]
    assert [a[2] for a in up2.sessions[0].auth] == [True]
    assert {a[0] for a in up.sessions[0].auth} == {"PLAIN", "LOGIN"}


def test_dsn_smtputf8_params_recorded(upstream_factory, pki):
    up = upstream_factory(dsn=True, smtputf8=True, size=1000)
    with smtp(up, pki) as s:
        assert s.has_extn("dsn") and s.has_extn("smtputf8") and s.esmtp_features["size"] == "1000"
        s.sendmail("a@x.test", ["b@y.test"], b"x\r\n",
                   mail_options=["SIZE=3", "RET=HDRS", "ENVID=QQ314159"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@y.test"])
    (t,) = up.transactions
    assert t.mail == b"mail FROM:<a@x.test> size=3 SIZE=3 RET=HDRS ENVID=QQ314159"
    assert t.rcpts == [b"rcpt TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test"]


@pytest.mark.parametrize("mode,expect_two", [("strict", False), ("lenient", True)])
def test_data_end_modes_expose_smuggling(upstream_factory, pki, mode, expect_two):
    up = upstream_factory(data_end=mode)
    c = RawSMTP("127.0.0.1", up.port, timeout=3, ca_file=pki["ca"])
    c.start()
    c.cmd("MAIL FROM:<a@x.test>"), c.cmd("RCPT TO:<b@y.test>"), c.cmd("DATA")
    c.send(b"first\r\n\n.\nMAIL FROM:<smuggled@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nevil\r\n.\r\n")
    replies = []
    try:
        while True:
            replies.append(c.reply(timeout=1).code)
    except (socket.timeout, ConnectionClosed):
        pass
    c.close()
    mails = [t.mail_from for t in up.transactions]
    if expect_two:
        assert mails == [b"a@x.test", b"smuggled@x.test"]
        assert up.transactions[0].terminator == b".\n"
    else:
        assert mails == [b"a@x.test"]
        assert b"\n.\n" in up.transactions[0].content


def test_bounded_line_and_delays(upstream_factory, pki):
    up = upstream_factory(max_line=100, delays={"mail": 0.5})
    c = RawSMTP("127.0.0.1", up.port, timeout=3, ca_file=pki["ca"])
    c.start()
    assert c.cmd(b"NOOP " + b"x" * 1000).code == 500
    t0 = time.monotonic()
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    assert time.monotonic() - t0 >= 0.45
    c.close()


def test_stop_is_prompt_with_silent_peer(upstream_factory, pki):
    up = upstream_factory(mail_reply="silent")
    c = RawSMTP("127.0.0.1", up.port, timeout=3, ca_file=pki["ca"])
    c.start()
    c.send(b"MAIL FROM:<a@x.test>\r\n")
    time.sleep(0.2)
    t0 = time.monotonic()
    up.stop()
    assert time.monotonic() - t0 < 3
    c.close()


# --------------------------------------------------------------------------- PKI
@pytest.mark.parametrize("cert,ok", [("server", True), ("expired", False),
                                     ("wrong_host", False), ("self_signed", False)])
def test_pki_properties(upstream_factory, pki, cert, ok):
    up = upstream_factory(tls="implicit", cert=pki[cert], key=pki[f"{cert}_key"])
    for host in ("localhost", "127.0.0.1"):
        s = socket.create_connection(("127.0.0.1", up.port), timeout=3)
        if ok:
            ctx(pki).wrap_socket(s, server_hostname=host).close()
        else:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx(pki).wrap_socket(s, server_hostname=host)
            s.close()
    # and with the unrelated CA nothing verifies
    s = socket.create_connection(("127.0.0.1", up.port), timeout=3)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context(cafile=pki["other_ca"]).wrap_socket(s, server_hostname="localhost")
    s.close()


# --------------------------------------------------------------------------- swaks / standalone
@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_swaks_against_upstream(upstream_factory, pki):
    up = upstream_factory()
    r = swaks(up.port, pki["ca"], "--from", "a@x.test", "--to", "b@y.test",
              "--body", "hello\n.dot line\n.\nbye", "--pipeline")
    assert r.rc == 0, r.out + r.err
    (t,) = up.transactions
    assert b"\r\nhello\r\n.dot line\r\n.\r\nbye\r\n" in t.content
    assert b"\r\nhello\r\n..dot line\r\n..\r\nbye\r\n" in t.raw_data
    # verification really happens: an expired cert makes swaks fail before MAIL
    bad = upstream_factory(cert=pki["expired"], key=pki["expired_key"])
    r = swaks(bad.port, pki["ca"], "--from", "a@x.test", "--to", "b@y.test")
    assert r.rc != 0
    bad.wait_closed()
    assert bad.transactions == [] and b"MAIL" not in bad.raw_pre_tls


def test_standalone_mode(tmp_path, pki):
    script = tmp_path / "s.json"
    rec = tmp_path / "rec.json"
    script.write_text(json.dumps({"cert": pki["server"], "key": pki["server_key"], "final_reply": 451}))
    p = subprocess.Popen([sys.executable, str(HERE / "support" / "upstream.py"), "--config", str(script),
                          "--record", str(rec)], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("upstream: listening on 127.0.0.1:")
        port = int(line.strip().rsplit(":", 1)[1])
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
            s.starttls(context=ctx(pki))
            with pytest.raises(smtplib.SMTPDataError):
                s.sendmail("a@x.test", ["b@y.test"], b"hi\r\n")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)
    d = json.loads(rec.read_text())
    assert d["sessions"][0]["transactions"][0]["content"] == "hi\r\n"
