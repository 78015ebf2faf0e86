"""End to end: client -> sealgate -> a private, real Postfix (STARTTLS, test PKI) -> Maildir.

Postfix is started with tests/e2e/postfix.sh in its own config/queue directories on
127.0.0.1:<free port>; it delivers every recipient into DIR/mail/inbox (Maildir).
Needs root and postfix; skipped otherwise.  The *_direct tests validate the Postfix
setup itself without sealgate.
"""
from __future__ import annotations

import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
import email
import email.policy
from pathlib import Path

import pytest

from support.clients import RawSMTP, swaks, swaks_available

SCRIPT = Path(__file__).resolve().parent / "postfix.sh"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("postfix") is None,
    reason="Postfix e2e needs root and postfix installed")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class PostfixInstance:
    def __init__(self, dir: str, port: int):
        self.dir, self.port = dir, port
        self.maildir = Path(dir) / "mail" / "inbox"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return subprocess.run(["sh", str(SCRIPT), "log", self.dir], capture_output=True, text=True).stdout

    def wait_for_message(self, marker: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sub in ("new", "cur"):
                d = self.maildir / sub
                if d.is_dir():
                    for f in d.iterdir():
                        data = f.read_bytes()
                        if marker in data:
                            return data
            time.sleep(0.1)
        raise AssertionError(f"message with marker {marker!r} not delivered within {timeout}s; "
                             f"postfix log:\n{self.log()[-5000:]}")


@pytest.fixture(scope="session")
def postfix(pki):
    d = tempfile.mkdtemp(prefix="sealgate-postfix-")
    os.chmod(d, 0o755)
    port = free_port()
    r = subprocess.run(["sh", str(SCRIPT), "start", d, str(port), pki["server"], pki["server_key"]],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log = subprocess.run(["sh", str(SCRIPT), "log", d], capture_output=True, text=True).stdout
        subprocess.run(["sh", str(SCRIPT), "stop", d], capture_output=True)
        pytest.fail(f"could not start private postfix: rc={r.returncode}\n{r.stdout}\n{r.stderr}\n{log}")
    inst = PostfixInstance(d, port)
    try:
        yield inst
    finally:
        subprocess.run(["sh", str(SCRIPT), "stop", d], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def make_message(marker: str) -> bytes:
    return (f"From: Alice <alice@x.test>\r\n"
            f"To: Bob <bob@e2e.test>\r\n"
            f"Subject: e2e {marker}\r\n"
            f"Message-ID: <{marker}@x.test>\r\n"
            f"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"\r\n"
            f"8bit: grüße\r\n"
            f"first line\r\n"
            f".leading dot\r\n"
            f".\r\n"
            f"..two dots\r\n"
            f"trailing spaces   \r\n"
            f"\tTab line\r\n"
            f"last line {marker}\r\n").encode()


def assert_body_intact(delivered: bytes, sent: bytes) -> None:
    # Maildir stores LF line endings; Postfix prepends Return-Path/Delivered-To/Received
    expect = sent.replace(b"\r\n", b"\n")
    assert delivered.endswith(expect), f"delivered message differs:\n{delivered!r}\nexpected suffix:\n{expect!r}"


def test_postfix_direct_smtplib(postfix, pki):
    """Validates the private Postfix itself (no sealgate): STARTTLS with the test CA."""
    marker = uuid.uuid4().hex
    msg = make_message(marker)
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.sendmail("alice@x.test", ["bob@e2e.test"], msg)
    assert_body_intact(postfix.wait_for_message(marker.encode()), msg)


@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_postfix_direct_swaks(postfix, pki):
    marker = uuid.uuid4().hex
    r = swaks(postfix.port, pki["ca"], "--from", "alice@x.test", "--to", "bob@e2e.test",
              "--header", f"Subject: swaks {marker}", "--body", f"hello\n.dot\n.\n{marker}")
    assert r.rc == 0, r.out + r.err
    data = postfix.wait_for_message(marker.encode())
    assert f"\nhello\n.dot\n.\n{marker}\n".encode() in data


def test_relay_through_sealgate_to_postfix(postfix, sealgate_factory, pki):
    sg = sealgate_factory(postfix.address)
    marker = uuid.uuid4().hex
    msg = make_message(marker)
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as s:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.sendmail("alice@x.test", ["bob@e2e.test", "carol@e2e.test"], msg)
    delivered = postfix.wait_for_message(marker.encode())
    assert_body_intact(delivered, msg)
    # Postfix saw TLS from sealgate (its Received header says so)
    assert b"with ESMTPS" in delivered


@pytest.mark.skipif(not swaks_available(), reason="swaks not installed")
def test_relay_through_sealgate_to_postfix_swaks_pipelined(postfix, sealgate_factory, pki):
    sg = sealgate_factory(postfix.address)
    marker = uuid.uuid4().hex
    r = swaks(sg.port, pki["ca"], "--from", "alice@x.test", "--to", "bob@e2e.test",
              "--pipeline", "--header", f"Subject: swaks {marker}",
              "--body", f"hello\n.dot\n.\n{marker}")
    assert r.rc == 0, r.out + r.err
    data = postfix.wait_for_message(marker.encode())
    assert f"\nhello\n.dot\n.\n{marker}\n".encode() in data


def test_dsn_params_accepted_by_postfix(postfix, sealgate_factory, pki):
    sg = sealgate_factory(postfix.address)
    marker = uuid.uuid4().hex
    msg = make_message(marker)
    with RawSMTP("127.0.0.1", sg.port, ca_file=pki["ca"], timeout=20) as c:
        ehlo = c.start()
        assert "DSN" in [l.split()[0].upper() for l in ehlo.lines[1:]], ehlo
        assert c.cmd(f"MAIL FROM:<alice@x.test> RET=HDRS ENVID={marker} BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<bob@e2e.test> NOTIFY=FAILURE ORCPT=rfc822;bob@e2e.test").code == 250
        assert c.cmd("DATA").code == 354
        from support.clients import dot_stuff
        c.send(dot_stuff(msg))
        final = c.reply(timeout=20)
        assert final.code == 250, final
        c.quit()
    assert_body_intact(postfix.wait_for_message(marker.encode()), msg)


# --------------------------------------------------------------------------- sealed mail
def wait_for_all(postfix, marker: bytes, n: int, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        found = []
        for sub in ("new", "cur"):
            d = postfix.maildir / sub
            if d.is_dir():
                found += [f.read_bytes() for f in d.iterdir() if marker in f.read_bytes()]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{len(found)} of {n} copies with {marker!r} delivered; log:\n{postfix.log()[-3000:]}")


def split_signed(message: bytes) -> tuple[bytes, bytes]:
    """(signed entity bytes exactly as between the boundaries, base64 signature) of a
    multipart/signed message with CRLF line ends."""
    m = email.message_from_bytes(message, policy=email.policy.compat32)
    boundary = m.get_param("boundary").encode()
    parts = message.split(b"\r\n--" + boundary)
    # parts: preamble, "\r\n" + entity, "\r\n" + signature part, "--\r\n" (epilogue)
    entity = parts[1][2:]
    signature_part = parts[2].split(b"\r\n\r\n", 1)[1]
    return entity, signature_part


def test_sealed_copies_survive_a_real_postfix_hop(postfix, sealgate_factory, pki, tmp_path):
    """S/MIME and PGP/MIME produced by sealgate, relayed by Postfix into a Maildir, then
    decrypted and verified there by openssl cms, gpgsm and gpg: canonicalisation holds."""
    from support.crypto import Gpg, cms_decrypt, cms_verify, run
    from support.pki import make_smime_pki
    from conftest import SEALGATE_BIN

    spki = make_smime_pki(str(tmp_path / "pki"))
    peggy, alice = Gpg(), Gpg()
    try:
        peggy_fpr = peggy.generate("Peggy <peggy@example.org>")
        alice_fpr = alice.generate("Alice <alice@example.org>")
        peggy.import_(alice.export(alice_fpr))
        (tmp_path / "peggy.asc").write_bytes(peggy.export(peggy_fpr))
        (tmp_path / "alice.asc").write_bytes(alice.export(alice_fpr, secret=True))
        sg = sealgate_factory(postfix.address, extra={"policy": {"encrypt": "opportunistic", "sign": True}},
                              listen=[{"sign_without_auth": True}])
        for args in ([spki["rsa1.pem"], str(tmp_path / "peggy.asc")],
                     ["--private", spki["signer.pem"], spki["signer.key"]],
                     ["--private", str(tmp_path / "alice.asc")]):
            p = subprocess.run([SEALGATE_BIN, "keys", "import", *args, "--config", str(sg.config_path)],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
        marker = uuid.uuid4().hex
        msg = make_message(marker).replace(
            b"From: Alice <alice@x.test>\r\nTo: Bob <bob@e2e.test>\r\n",
            b"From: Alice <alice@example.org>\r\nTo: bob@example.org, peggy@example.org, nokey@example.org\r\n")
        ctx = ssl.create_default_context(cafile=pki["ca"])
        with smtplib.SMTP("127.0.0.1", sg.port, timeout=60) as s:
            s.starttls(context=ctx)
            assert not s.sendmail("alice@example.org",
                                  ["bob@example.org", "peggy@example.org", "nokey@example.org"], msg)
        delivered = [d.replace(b"\n", b"\r\n") for d in wait_for_all(postfix, marker.encode(), 3)]
        by_type = {email.message_from_bytes(d).get_content_type(): d for d in delivered}
        assert set(by_type) == {"application/pkcs7-mime", "multipart/encrypted", "multipart/signed"}, by_type.keys()

        # S/MIME for Bob: openssl decrypts and verifies the signature inside.
        inner = cms_decrypt(by_type["application/pkcs7-mime"], spki["rsa1.pem"], spki["rsa1.key"])
        assert b"last line " + marker.encode() in cms_verify(inner, spki["ca.pem"])

        # Signed only (nokey): openssl and gpgsm verify after the hop.
        signed = by_type["multipart/signed"]
        assert b"last line " + marker.encode() in cms_verify(signed, spki["ca.pem"])
        entity, sig_b64 = split_signed(signed)
        home = tmp_path / "gpgsm"
        home.mkdir(mode=0o700)
        env = dict(os.environ, GNUPGHOME=str(home))
        (home / "gpgsm.conf").write_text("disable-crl-checks\n")
        run(["gpgsm", "--batch", "--import", spki["ca.pem"]], env=env)
        fpr = run(["gpgsm", "--batch", "--with-colons", "--list-keys"], env=env).stdout.decode()
        ca_fpr = next(l.split(":")[9] for l in fpr.splitlines() if l.startswith("fpr:"))
        (home / "trustlist.txt").write_text(f"{ca_fpr} S relax\n")
        import base64
        (tmp_path / "sig.p7s").write_bytes(base64.b64decode(b"".join(sig_b64.split())))
        (tmp_path / "entity").write_bytes(entity)
        v = run(["gpgsm", "--batch", "--status-fd", "2", "--verify", str(tmp_path / "sig.p7s"),
                 str(tmp_path / "entity")], env=env, check=False)
        # No agent of this throwaway home may outlive the test.
        run(["gpgconf", "--kill", "all"], env=env, check=False)
        status = v.stderr.decode(errors="replace")
        assert "[GNUPG:] GOODSIG" in status and "[GNUPG:] VALIDSIG" in status, status

        # PGP/MIME for Peggy: gpg decrypts and verifies Alice's signature.
        pm = email.message_from_bytes(by_type["multipart/encrypted"])
        armored = [p.get_payload(decode=True) for p in pm.walk()
                   if p.get_content_type() == "application/octet-stream"][0]
        plain, status = peggy.decrypt(armored)
        assert "[GNUPG:] GOODSIG" in status and "DECRYPTION_OKAY" in status, status
        assert b"last line " + marker.encode() in plain
    finally:
        peggy.close()
        alice.close()
