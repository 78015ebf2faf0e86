"""Issue 9 items 4 and 5 and issue 17 item 5 through the real binary: client-encrypted S/MIME in
BER (`openssl cms -encrypt -stream`) is relayed untouched; a quoted armored PGP block in a plain
body does not stop sealing; a field with white space before its colon does not hide a later Bcc."""
from __future__ import annotations

from support.crypto import cms_decrypt, run
from test_policy_e2e import copies, parse, pgp, secure, send, smime_pki  # noqa: F401 (fixtures)


def test_ber_client_encrypted_smime_passes_untouched(secure, smime_pki):
    r = secure()
    ber = run(["openssl", "cms", "-encrypt", "-stream", "-aes256", smime_pki["ec1.pem"]],
              b"Content-Type: text/plain\r\n\r\nhello dave\r\n").stdout.replace(b"\n", b"\r\n")
    msg = b"From: alice@example.org\r\nTo: bob@example.org\r\n" + ber
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    assert [t.content for t in r.up.messages] == [msg]


def test_quoted_armored_block_does_not_stop_sealing(secure, smime_pki, pgp):
    r = secure()
    block = pgp["peggy"].encrypt("peggy@example.org", b"old secret\r\n").replace(b"\n", b"\r\n")
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: re\r\n\r\n"
           b"You sent me this:\r\n" + block + b"\r\nMy plain answer.\r\n")
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    [t] = r.up.messages
    assert b"My plain answer" not in t.content
    assert parse(t.content).get_content_type() == "application/pkcs7-mime"
    assert b"My plain answer" in cms_decrypt(t.content, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])


def test_white_space_before_colon_does_not_hide_bcc(secure):
    r = secure()
    msg = (b"From: Alice <alice@example.org>\r\nTo: nokey@example.org\r\nX-A : b\r\n"
           b"Bcc: hidden@example.org\r\nSubject: s\r\n\r\nbody\r\n")
    assert send(r, "alice@example.org", ["nokey@example.org"], msg) == {}
    for t in r.up.messages:
        assert b"hidden@example.org" not in t.content
        assert b"X-A : b" in t.content
