#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/TARGET/NAME) from the cases of the
unit tests and the demo keys in keys/demo. Run from anywhere: python3 fuzz/seeds/make.py.
The PEM private-key seeds in other formats (PKCS#1, encrypted PKCS#8, SEC1 EC) are made from
the demo keys with openssl, when it is installed. Existing files are rewritten."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent.parent / "keys" / "demo"


def put(target: str, name: str, data: bytes) -> None:
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- command: one line, no CRLF
for i, line in enumerate([
    b"EHLO client.example", b"HELO c", b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME",
    b"MAIL FROM:<>", b"MAIL FROM: <@r1,@r2:u@d.example> SMTPUTF8", b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test",
    b'RCPT TO:<"quoted local"@x.test>', "RCPT TO:<m\u00fcller@b\u00fccher.example>".encode(),
    b"DATA", b"BDAT 10 LAST", b"BDAT 0", b"BDAT 18446744073709551615", b"RSET", b"NOOP x", b"QUIT",
    b"VRFY postmaster", b"HELP", b"STARTTLS", b"AUTH PLAIN AGEAYg==", b"AUTH LOGIN",
    b"MAIL FROM:<a@b> AUTH=<>", b"MAIL FROM:<a@b> RET=HDRS ENVID=x+2By", b"rcpt to:<x@y>",
    b"MAIL FROM:<a\x00b@c>", b"MAIL FROM:<a@b>SIZE=1",
]):
    put("command", f"{i:02}", line)

# ---------------------------------------------------------------- data: split byte + wire after 354
for i, wire in enumerate([
    b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<a@b>\r\n", b".\r\n",
    b"a\r\n\n.\n", b"a\n.\r\n", b"a\r\n.\n", b"a\r.\r", b"a\r\n.\r\r\n", b"a\r\n.\x00\r\n.\r\n",
    b"a\rb\r\n.\r\n", b"line\r\n..\r\n.x\r\n\r\n.\r\n", b"no end yet\r\n", b"abc\r\nabcdefg\r\n.\r\nQUIT\r\n",
]):
    put("data", f"{i:02}", bytes([i % 16]) + wire)

# ---------------------------------------------------------------- session: flags, script, stream
EHLO = b"EHLO c.test\r\n"
TX = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
sessions = [
    (0x00, b"", EHLO + b"MAIL FROM:<a@x.test> SIZE=20\r\nRCPT TO:<b@y.test> NOTIFY=SUCCESS\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n"),
    (0xE0, b"\x0f", EHLO + TX + b"DATA\r\none\r\n.\r\n" + TX + b"DATA\r\ntwo\r\n.\r\n"),
    (0x20, b"", EHLO + TX + b"DATA\r\nhello\r\n\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nforged\r\n.\r\n"),
    (0x20, b"", EHLO + TX + b"DATA\r\nhello\r\n.\r\r\nMAIL FROM:<evil@x>\r\n"),
    (0x40, b"", EHLO + TX + b"DATA\r\na\r\n.\x00\r\n\x00.\r\n.\r\nNOOP\r\n"),
    (0x00, b"", EHLO + TX + b"BDAT 4\r\nab\r\nBDAT 4 LAST\r\ncd\r\nNOOP\r\n"),
    (0x00, b"", EHLO + TX + b"BDAT 5\r\nLEAK!RSET\r\n" + TX + b"BDAT 6 LAST\r\nsecond"),
    (0x00, b"", EHLO + TX + b"BDAT 5\r\nLEAK!EHLO again\r\n" + TX + b"BDAT 6 LAST\r\nsecond"),
    (0x00, b"", EHLO + TX + b"BDAT 10 LAST \r\nMAIL FROM:<smuggled@x>\r\n"),
    (0x00, b"", EHLO + b"BDAT 6\r\nQUIT\r\nNOOP\r\n"),
    (0x01, b"", EHLO + b"STARTTLS\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"),
    (0x05, b"", EHLO + b"MAIL FROM:<a@x>\r\nAUTH PLAIN AGEAYg==\r\n"),
    (0x02, b"\x08\x01", EHLO + b"AUTH LOGIN\r\ndXNlcg==\r\nMAIL FROM:<a@x> AUTH=<>\r\n"),
    (0x02, b"\x08", EHLO + b"AUTH PLAIN AGEAYg==\r\nMAIL FROM:<a@x> AUTH=a@x\r\n"),
    (0x08, b"", EHLO + TX + b"RCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\nRCPT TO:<e@y>\r\nDATA\r\n" + b"x" * 30 + b"\r\n.\r\n"),
    (0x08, b"\x01", EHLO + TX + b"BDAT 300 LAST\r\n"),
    (0x00, b"\x03", EHLO + b"MAIL FROM:<a@x>\r\nRCPT TO:<bad@y>\r\nDATA\r\n"),
    (0x00, b"\x06", "EHLO c\r\nMAIL FROM:<j\u00f6rg@x> SMTPUTF8\r\nRCPT TO:<m\u00fcller@y>\r\n".encode()),
    (0x00, b"", b"JUNK\r\n" * 30),
    (0x00, b"", b"EHLO c\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
    (0x08, b"", b"NOOP " + b"x" * 100 + b"\r\nNOOP\r\n"),
    (0x00, b"", EHLO + b"MAIL FROM:<a@x> SIZE=100000000000000000000\r\nMAIL FROM:<a@x> SIZE=-1\r\n"),
    (0x00, b"\xee", EHLO + TX + b"DATA\r\npart one is long enough\r\n.\r\nRSET\r\n"),
    (0x00, b"\x00\x00\x02", EHLO + TX + b"DATA\r\nfirst\r\n.\r\n" + TX + b"DATA\r\nsecond\r\n.\r\n"),
]
for i, (flags, script, stream) in enumerate(sessions):
    put("session", f"{i:02}", bytes([flags, len(script)]) + script + stream)

# ---------------------------------------------------------------- reply: upstream replies
for i, r in enumerate([
    b"250-mx.example\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250 STARTTLS\r\nextra",
    b"451 4.3.0 try later\r\n", b"354\r\n", b"220 mx.example ESMTP\r\n", b"250 2.0.0\r\n",
    b"550 no such user\r\n", b"451 5.1.1 odd\r\n", b"250-a\r\n550 b\r\n", b"999 x\r\n", b"250x\r\n",
    b"250 ok\n", b"334 VXNlcm5hbWU6\r\n", b"250-2.1.0 a\r\n250 2.1.0 b\r\n", b"421 4.7.0 \xff\x00bye\r\n",
]):
    put("reply", f"{i:02}", r)

# ---------------------------------------------------------------- mime: mode byte + message
msgs = [
    b"Received: from x\r\nFrom: Alice <alice@example.org>\r\nTo: bob@example.org\r\nBcc: secret@example.org\r\nSubject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n",
    b"Subject: hello\r\n world\r\nTo: a@b\r\n\r\nbody\r\n",
    b"From: x\nnot a header line\nmore",
    b"X-A : b\r\nBcc: hidden@example.org\r\nSubject: [secure] t\r\n\r\nbody\r\n",
    b"Resent-Bcc: r@x\r\nX-Sealgate-Result: forged\r\nFrom: a@b\r\n\r\nx",
    "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u00fc\u00dfe\nzweite Zeile".encode(),
    b"Content-Transfer-Encoding: 8BIT\r\n\r\nplain\r\n",
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + bytes(range(256)),
    b"Content-Type: text/plain\r\n\r\n" + b"a" * 1200 + b"\r\n",
    b"Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\nContent-Type: text/plain\n\nh\xe9\n--XX\nContent-Type: multipart/alternative; boundary=YY\n\n--YY\n\ninner\n--YY--\n--XX--\nepilogue\n",
    b"Content-Type: multipart/mixed; boundary=Q\r\n\r\n--Q\r\n\r\nunterminated",
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a",
    b"Content-Transfer-Encoding: base64\r\n\r\n\xff\xff====",
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=\xff=4=\r\n",
    b" continuation first\r\n\r\n",
    b"\xff\xfe: x\r\n\r\nbody",
    b"Subject: " + b"word " * 300 + b"\r\n\r\nx",
    b"From: a@b\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\r\n\r\n--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEM\r\n-----END PGP MESSAGE-----\r\n--e--\r\n",
    b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n",
    b"From: a@b\r\nSubject: =?UTF-8?Q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?=\r\n\r\nx\r\n",
]
for i, m in enumerate(msgs):
    put("mime", f"{i:02}", bytes([i % 6]) + m)

# ---------------------------------------------------------------- keys
for f in sorted(DEMO.iterdir()):
    if f.suffix in (".pem", ".der", ".p7b") and "key" not in f.name:
        put("key_x509", f.name, f.read_bytes())
    elif f.suffix == ".p12":
        put("key_pkcs12", f.name, f.read_bytes())
    elif f.suffix in (".asc", ".gpg"):
        put("key_openpgp", f.name, f.read_bytes())

key = (DEMO / "alice-smime.key").read_bytes()
cert = (DEMO / "alice-smime.pem").read_bytes()
put("key_pem_private", "pkcs8-and-cert", key + b"\xff" + cert)
put("key_pem_private", "one-file", key + cert)
put("key_pem_private", "cert-only", cert)
if shutil.which("openssl"):
    with tempfile.TemporaryDirectory() as tmp:
        k = os.path.join(tmp, "k.pem")
        Path(k).write_bytes(key)

        def ossl(*args: str) -> bytes:
            return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout

        put("key_pem_private", "pkcs1-and-cert", ossl("rsa", "-in", k, "-traditional") + b"\xff" + cert)
        put("key_pem_private", "encrypted-pkcs8-and-cert",
            ossl("pkcs8", "-topk8", "-in", k, "-v2", "aes-256-cbc", "-iter", "1", "-passout", "pass:demo-passphrase")
            + b"\xff" + cert)
        ec = ossl("ecparam", "-name", "prime256v1", "-genkey")
        ek = os.path.join(tmp, "ec.pem")
        Path(ek).write_bytes(ec)
        ec_cert = ossl("req", "-new", "-x509", "-key", ek, "-subj", "/CN=fuzz", "-days", "1",
                       "-addext", "subjectAltName=email:fuzz@example.test")
        put("key_pem_private", "sec1-ec-and-cert", ec + b"\xff" + ec_cert)
        c = os.path.join(tmp, "c.pem")
        Path(c).write_bytes(cert)
        # One iteration: the fuzzer gets far more executions than with openssl's 2048.
        put("key_pkcs12", "noiter.p12", ossl("pkcs12", "-export", "-inkey", k, "-in", c, "-noiter",
                                             "-nomaciter", "-passout", "pass:demo-passphrase"))
        put("key_pkcs12", "nomac.p12", ossl("pkcs12", "-export", "-inkey", k, "-in", c, "-noiter",
                                            "-nomac", "-passout", "pass:demo-passphrase"))
