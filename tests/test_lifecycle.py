"""Process-level behaviour of the sealgate binary: graceful stop on SIGTERM, check-config,
implicit TLS on both sides, and the demo command a newcomer runs first."""
from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SEALGATE_BIN
from support.clients import RawSMTP, client_ssl_context, dot_stuff

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: lifecycle\r\n\r\nbody line\r\n.leading dot\r\n"


def test_sigterm_stops_accepting_and_lets_the_session_in_flight_finish(relay):
    c = relay.session()
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    assert c.cmd("RCPT TO:<b@y.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(MSG)[:20])
    relay.sg.proc.send_signal(signal.SIGTERM)
    # New connections are no longer accepted...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            break
    else:
        pytest.fail("sealgate still accepts connections after SIGTERM")
    # ...but the message in flight completes and is relayed.
    assert relay.sg.alive()
    c.send(dot_stuff(MSG)[20:])
    r = c.reply(timeout=10)
    assert r.code == 250, r
    c.quit()
    assert relay.sg.proc.wait(10) == 0
    assert [m.content for m in relay.up.messages] == [MSG]


def test_check_config_accepts_a_valid_file_and_lists_every_error_of_a_bad_one(relay, tmp_path):
    ok = subprocess.run([SEALGATE_BIN, "check-config", "--config", str(relay.sg.config_path)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[listen]]\naddress = "not-an-address"\ntls = "starttls"\n'
        '[upstream]\naddress = "mx.example"\ntls = "none"\n'
        '[limits]\nmax_command_line = 100\n')
    res = subprocess.run([SEALGATE_BIN, "check-config", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, (res.returncode, res.stderr)
    for needle in ("store", "listen[0].address", "upstream.tls", "plaintext", "upstream.address",
                   "limits.max_command_line"):
        assert needle in res.stderr, f"{needle!r} missing from:\n{res.stderr}"
    serve = subprocess.run([SEALGATE_BIN, "serve", "--config", str(bad)],
                           capture_output=True, text=True, timeout=30)
    assert serve.returncode == 2 and "upstream.tls" in serve.stderr


def test_check_config_checks_what_serve_loads(relay, tmp_path):
    """Issue 9 item 10: trust anchors, store and spool paths are checked by check-config, with
    the same code serve runs, so a file that passes the check starts."""
    good = relay.sg.config_path.read_text()
    not_pem = tmp_path / "anchors.pem"
    not_pem.write_text("this is not a certificate\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.replace(f'path = "{relay.sg.workdir / "store"}"', f'path = "{a_file / "store"}"')
        .replace('hostname = "sealgate.test"', f'hostname = "sealgate.test"\nspool_dir = "{a_file}"')
        + f'\n[smime]\ntrust_anchors = "{not_pem}"\n')
    res = subprocess.run([SEALGATE_BIN, "check-config", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, (res.stdout, res.stderr)
    for needle in ("smime.trust_anchors", "store.path", "server.spool_dir", "not a directory"):
        assert needle in res.stderr, f"{needle!r} missing from:\n{res.stderr}"
    serve = subprocess.run([SEALGATE_BIN, "serve", "--config", str(bad)],
                           capture_output=True, text=True, timeout=30)
    assert serve.returncode == 2 and "smime.trust_anchors" in serve.stderr, serve.stderr


def test_implicit_tls_on_both_sides(relay_factory, pki):
    r = relay_factory(upstream={"tls": "implicit"},
                      listen=[{"tls": "implicit"}],
                      upstream_cfg={"tls": "implicit"})
    with r.client(implicit_tls=True) as c:
        assert c.greeting().code == 220
        ehlo = c.ehlo()
        assert b"STARTTLS" not in ehlo.raw
        assert c.cmd("MAIL FROM:<a@x.test>").code == 250
        assert c.cmd("RCPT TO:<b@y.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(MSG))
        assert c.reply(timeout=10).code == 250
        c.quit()
    assert [m.content for m in r.up.messages] == [MSG]
    assert all(s.tls_version for s in r.up.sessions)


def test_demo_relays_a_message_into_its_folder(tmp_path):
    demo = tmp_path / "demo"
    keys = Path(__file__).resolve().parent.parent / "keys" / "demo"
    proc = subprocess.Popen([SEALGATE_BIN, "demo", "--dir", str(demo), "--listen", "127.0.0.1:0",
                             "--sink", "127.0.0.1:0", "--keys", str(keys)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"proxy\s+smtp://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, "demo did not print its proxy address"
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.starttls(context=client_ssl_context(str(demo / "tls" / "ca.pem")))
            s.sendmail("alice@example.org", ["bob@example.net"], MSG)
        eml = demo / "mail" / "1.eml"
        deadline = time.monotonic() + 5
        while not eml.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eml.read_bytes() == MSG
        envelope = (demo / "mail" / "1.envelope").read_text()
        assert "MAIL FROM:<alice@example.org>" in envelope
        assert "RCPT TO:<bob@example.net>" in envelope
        assert (demo / "sealgate.toml").exists()
        # The store is seeded from keys/demo: mail to alice@example.test is S/MIME, signed and
        # encrypted, and opens with the demo key as the demo's instructions say.
        secret = MSG.replace(b"From: a@x.test\r\nTo: b@y.test", b"From: alice@example.test\r\nTo: alice@example.test")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.starttls(context=client_ssl_context(str(demo / "tls" / "ca.pem")))
            s.sendmail("alice@example.test", ["alice@example.test"], secret)
        sealed = (demo / "mail" / "2.eml").read_bytes()
        assert b"application/pkcs7-mime" in sealed and b"body line" not in sealed
        inner = subprocess.run(["openssl", "cms", "-decrypt", "-recip", str(keys / "alice-smime.pem"),
                                "-inkey", str(keys / "alice-smime.key"), "-in", str(demo / "mail" / "2.eml")],
                               capture_output=True, check=True).stdout
        content = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(keys / "ca.pem")],
                                 input=inner, capture_output=True, check=True).stdout
        assert b"body line" in content
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
