"""The product end to end: sealgate with a policy and a key store filled by `sealgate keys`
while it runs, a real client (smtplib), the scripted TLS upstream, and every copy that arrives
opened by other implementations (openssl cms, gpg)."""
from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import tempfile

import pytest

from conftest import SEALGATE_BIN
from support.clients import client_ssl_context
from support.crypto import Gpg, cms_decrypt, cms_recipient_count, cms_verify
from support.pki import make_smime_pki

POLICY = {
    "encrypt": "opportunistic",
    "sign": True,
    "format": "auto",
    "subject_trigger": "[secure]",
    "rule": [{"match": "*.required.test", "encrypt": "required"}],
}


@pytest.fixture(scope="module")
def smime_pki():
    d = tempfile.mkdtemp(prefix="sealgate-e2e-pki-")
    return make_smime_pki(d)


@pytest.fixture(scope="module")
def pgp():
    """Peggy, an OpenPGP recipient (her own GnuPG home), and Alice's OpenPGP signing key."""
    peggy = Gpg()
    peggy_fpr = peggy.generate("Peggy <peggy@example.org>")
    alice = Gpg()
    alice_fpr = alice.generate("Alice <alice@example.org>")
    peggy.import_(alice.export(alice_fpr))
    yield {"peggy": peggy, "peggy_pub": peggy.export(peggy_fpr),
           "alice_secret": alice.export(alice_fpr, secret=True)}
    peggy.close()
    alice.close()


def keys_cli(sg, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([SEALGATE_BIN, "keys", *args, "--config", str(sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"sealgate keys {args} failed:\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture
def secure(relay_factory, smime_pki, pgp, tmp_path):
    """A relay whose store is filled through the CLI while sealgate is running."""
    def make(upstream=None, policy=None, sign_without_auth=True):
        r = relay_factory(upstream=upstream, extra={"policy": policy or POLICY},
                          listen=[{"sign_without_auth": sign_without_auth}])
        peggy = tmp_path / "peggy.asc"
        peggy.write_bytes(pgp["peggy_pub"])
        alice_pgp = tmp_path / "alice-secret.asc"
        alice_pgp.write_bytes(pgp["alice_secret"])
        keys_cli(r.sg, "import", smime_pki["rsa1.pem"], smime_pki["ec1.pem"], str(peggy))
        keys_cli(r.sg, "import", "--private", smime_pki["signer.pem"], smime_pki["signer.key"])
        keys_cli(r.sg, "import", "--private", str(alice_pgp))
        return r
    return make


def send(r, sender: str, rcpts: list, msg: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", r.port, timeout=60) as s:
        s.starttls(context=client_ssl_context(r.pki["ca"]))
        return s.sendmail(sender, rcpts, msg)


def copies(r) -> dict:
    """Delivered copies by their recipients (comma-joined)."""
    out = {}
    for t in r.up.messages:
        key = ",".join(a.decode() if isinstance(a, bytes) else a for a in t.rcpt_addrs)
        out[key] = t.content
    return out


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


MSG = (b"From: Alice <alice@example.org>\r\n"
       b"To: Bob <bob@example.org>, Peggy <peggy@example.org>, nokey@example.org\r\n"
       b"Bcc: dave@example.org\r\n"
       b"Subject: Quarterly figures\r\n"
       b"Message-ID: <e2e-1@example.org>\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n"
       b"Content-Transfer-Encoding: 8bit\r\n"
       b"\r\n"
       b"Gr\xc3\xbc\xc3\x9fe, the figures are attached in spirit.\r\n"
       b".a line starting with a dot\r\n")


def test_mixed_message_each_copy_sealed_and_opened_by_other_tools(secure, smime_pki, pgp):
    r = secure()
    rcpts = ["bob@example.org", "peggy@example.org", "nokey@example.org", "dave@example.org"]
    assert send(r, "alice@example.org", rcpts, MSG) == {}
    got = copies(r)
    assert set(got) == {"bob@example.org", "peggy@example.org", "nokey@example.org", "dave@example.org"}, got.keys()

    # Bob: S/MIME enveloped, one RecipientInfo (no Bcc leak), signed by Alice inside.
    bob = got["bob@example.org"]
    assert parse(bob).get_content_type() == "application/pkcs7-mime"
    assert cms_recipient_count(bob) == 1
    inner = cms_decrypt(bob, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])
    content = cms_verify(inner, smime_pki["ca.pem"])
    assert "the figures are attached".encode() in content
    assert b"Bcc" not in bob and b"dave@" not in bob and b"Bcc" not in inner
    with pytest.raises(AssertionError):
        cms_decrypt(bob, smime_pki["ec1.pem"], smime_pki["ec1.key"])

    # Dave (Bcc, EC P-256): his own copy, only his RecipientInfo.
    dave = got["dave@example.org"]
    assert cms_recipient_count(dave) == 1
    dave_inner = cms_decrypt(dave, smime_pki["ec1.pem"], smime_pki["ec1.key"])
    assert "the figures".encode() in cms_verify(dave_inner, smime_pki["ca.pem"])
    assert b"Bcc" not in dave_inner

    # Peggy: PGP/MIME, decrypted and verified by gpg.
    peggy = got["peggy@example.org"]
    p = parse(peggy)
    assert p.get_content_type() == "multipart/encrypted"
    assert p.get_param("protocol") == "application/pgp-encrypted"
    armored = [part.get_payload(decode=True) for part in p.walk()
               if part.get_content_type() == "application/octet-stream"][0]
    plain, status = pgp["peggy"].decrypt(armored)
    assert "[GNUPG:] DECRYPTION_OKAY" in status and "[GNUPG:] GOODSIG" in status, status
    assert b"the figures are attached" in plain and b"dave@" not in plain

    # Nokey: plaintext (opportunistic), signed with Alice's S/MIME identity.
    nokey = got["nokey@example.org"]
    n = parse(nokey)
    assert n.get_content_type() == "multipart/signed"
    assert "the figures".encode() in cms_verify(nokey, smime_pki["ca.pem"])
    assert b"dave@" not in nokey

    # The first upstream transaction (for the RCPT verdicts) was reset, never completed.
    assert b"RSET" in b" ".join(r.up.commands())
    assert len(r.up.messages) == 4


def test_required_domain_without_key_is_refused_at_rcpt(secure):
    r = secure()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send(r, "alice@example.org", ["x@eu.required.test"], MSG)
    code, text = e.value.recipients["x@eu.required.test"]
    assert code == 550 and b"5.7.1" in text and b"required" in text.lower()
    assert not any(b"required.test" in c for c in r.up.commands())
    assert r.up.messages == []
    # With another recipient the message goes to that one only.
    assert set(send(r, "alice@example.org", ["x@eu.required.test", "bob@example.org"], MSG)) == {"x@eu.required.test"}
    assert [t.rcpt_addrs for t in r.up.messages] == [[b"bob@example.org"]]


@pytest.mark.parametrize("spelling", [
    "x@eu.required.test.",          # trailing dot: Postfix strips it and delivers
    '"x"@eu.required.test',         # quoted local part equal to the dot-atom
    "X@EU.Required.TEST",           # case
])
def test_required_rule_holds_for_every_spelling_of_the_mailbox(secure, spelling):
    """SECURITY.md I12: a rule is not escaped by writing the same mailbox another way."""
    r = secure()
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@example.org>").code == 250
        reply = c.cmd(f"RCPT TO:<{spelling}>")
        assert (reply.code, reply.enhanced) == (550, "5.7.1"), reply
        c.quit()
    assert not any(b"required.test" in c.lower() for c in r.up.commands())


def test_idna_rule_matches_u_and_a_label_spellings(secure):
    r = secure(upstream={"smtputf8": True},
               policy={**POLICY, "rule": [{"match": "b\u00fccher.example", "encrypt": "required"}]})
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@example.org> SMTPUTF8").code == 250
        for spelling in ["a@xn--bcher-kva.example", "a@B\u00fccher.Example.", "\"a\"@XN--BCHER-KVA.example"]:
            reply = c.cmd(f"RCPT TO:<{spelling}>".encode())
            assert (reply.code, reply.enhanced) == (550, "5.7.1"), (spelling, reply)
        c.quit()


def test_recipient_sent_upstream_in_the_form_decided_for(secure):
    r = secure()
    with r.session() as c:
        assert c.cmd("MAIL FROM:<alice@example.org>").code == 250
        assert c.cmd('RCPT TO:<"bob"@Example.ORG.>').code == 250
        c.quit()
    assert b"RCPT TO:<bob@example.org>" in r.up.commands()


@pytest.mark.parametrize("subject", [
    b"=?UTF-8?Q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?=",
    b"=?UTF-8?B?W3NlY3VyZV0gR3LDvMOfZQ==?=",
    b"=?UTF-8?Q?=5Bsec?=\r\n =?UTF-8?Q?ure=5D_Gr=C3=BC=C3=9Fe?=",
])
def test_subject_trigger_in_rfc2047_encoded_subjects(secure, smime_pki, subject):
    r = secure()
    msg = MSG.replace(b"Subject: Quarterly figures", b"Subject: " + subject)
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r, "alice@example.org", ["bob@example.org", "nokey@example.org"], msg)
    assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error
    assert r.up.messages == []
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    [bob] = [t.content for t in r.up.messages]
    inner = cms_verify(cms_decrypt(bob, smime_pki["rsa1.pem"], smime_pki["rsa1.key"]), smime_pki["ca.pem"])
    for part in (bob, inner):
        subj = email.message_from_bytes(part, policy=email.policy.default)["Subject"]
        if subj is not None:
            assert str(subj) == "Gr\u00fc\u00dfe", (subj, part[:400])


def test_forged_result_header_never_reaches_the_upstream(secure):
    r = secure()
    forged = MSG.replace(b"Subject:", b"X-Sealgate-Result: encrypted=smime; signed=yes\r\nSubject:")
    assert send(r, "alice@example.org", ["nokey@example.org"], forged) == {}
    assert all(b"x-sealgate-result" not in t.content.lower() for t in r.up.messages)


def test_size_headroom_and_sealed_copies_checked_before_any_is_sent(secure):
    """A copy that grows past the upstream's SIZE once sealed is refused before the first copy
    goes out (552, permanent): never a first copy accepted, then 451 and a duplicate on retry."""
    r = secure(upstream={"size": 200000})
    with r.session() as c:
        ehlo = c.cmd("EHLO client.test")
        assert "SIZE 142857" in ehlo.text, ehlo.text  # 200000 / 1.4
        c.quit()
    import random
    rnd = random.Random(7)
    lines = [bytes(rnd.randrange(0x80, 0x100) for _ in range(70)) for _ in range(1900)]
    body = b"\r\n".join(lines) + b"\r\n"
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org, nokey@example.org\r\n"
           b"Subject: big\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
    assert len(msg) < 142857
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r, "alice@example.org", ["bob@example.org", "nokey@example.org"], msg)
    assert e.value.smtp_code == 552 and b"5.3.4" in e.value.smtp_error, e.value
    assert r.up.messages == []
    assert [v for v in r.up.verbs() if v == b"MAIL"] == [b"MAIL"], r.up.verbs()


def test_subject_trigger_raises_to_required_and_is_removed(secure, smime_pki):
    r = secure()
    msg = MSG.replace(b"Subject: Quarterly", b"Subject: [secure] Quarterly")
    # nokey@ has no key: the message must not go out at all.
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r, "alice@example.org", ["bob@example.org", "nokey@example.org"], msg)
    assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error
    assert r.up.messages == []
    # Only keyed recipients: delivered encrypted, the tag gone everywhere.
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    [bob] = [t.content for t in r.up.messages]
    inner = cms_decrypt(bob, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])
    assert b"[secure]" not in bob and b"[secure]" not in inner
    assert b"Subject: Quarterly figures" in bob


def test_header_trigger_never_leaves(secure):
    r = secure()
    msg = MSG.replace(b"Subject:", b"X-Sealgate-Encrypt: required\r\nSubject:")
    with pytest.raises(smtplib.SMTPDataError):
        send(r, "alice@example.org", ["nokey@example.org"], msg)
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    assert all(b"x-sealgate" not in t.content.lower() for t in r.up.messages)


def test_unauthorised_from_is_not_signed(secure):
    r = secure()
    msg = MSG.replace(b"From: Alice <alice@example.org>", b"From: Mallory <mallory@example.org>")
    assert send(r, "alice@example.org", ["nokey@example.org"], msg) == {}
    [t] = r.up.messages
    assert t.content == msg.replace(b"Bcc: dave@example.org\r\n", b"")
    assert b"multipart/signed" not in t.content
    # Two From mailboxes: not signed either.
    msg2 = MSG.replace(b"From: Alice <alice@example.org>", b"From: alice@example.org, eve@example.org")
    assert send(r, "alice@example.org", ["nokey@example.org"], msg2) == {}
    assert b"multipart/signed" not in r.up.messages[-1].content


def test_upstream_refusing_one_recipient_at_rcpt(secure):
    r = secure(upstream={"rcpt_replies": {"peggy@example.org": "550 5.1.1 no such user"}})
    refused = send(r, "alice@example.org", ["bob@example.org", "peggy@example.org"], MSG)
    assert refused == {"peggy@example.org": (550, b"5.1.1 no such user")}
    assert [t.rcpt_addrs for t in r.up.messages] == [[b"bob@example.org"]]


def test_failure_on_the_second_copy_is_queued_never_451(secure):
    """Issue 10: the first copy was accepted, so the client gets 250 and the second copy (still
    sealed) waits in the durable queue; tests/e2e/test_queue.py follows it to delivery or DSN."""
    import json
    r = secure(upstream={"final_reply": [250, "451 4.3.0 disk full"]})
    assert send(r, "alice@example.org", ["bob@example.org", "peggy@example.org"], MSG) == {}
    assert len(r.up.messages) == 2  # the second one was answered 451 by the upstream
    listed = subprocess.run([SEALGATE_BIN, "queue", "list", "--json", "--config", str(r.sg.config_path)],
                            capture_output=True, text=True, timeout=30)
    [entry] = json.loads(listed.stdout)
    assert [x["path"]["address"] for x in entry["recipients"]] == ["peggy@example.org"]
    assert entry["encrypted"] is True and "451 4.3.0 disk full" in entry["last_reply"]


def test_already_encrypted_input_passes_untouched(secure, pgp, smime_pki):
    r = secure()
    # PGP/MIME made by gpg for Peggy, sent to Bob (who has an S/MIME key): relayed as is.
    armored = pgp["peggy"].encrypt("peggy@example.org", b"secret from the client itself\r\n")
    msg = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: x\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n"
           b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n"
           b"Content-Type: application/octet-stream\r\n\r\n" + armored.replace(b"\n", b"\r\n") + b"--b--\r\n")
    assert send(r, "alice@example.org", ["bob@example.org"], msg) == {}
    assert [t.content for t in r.up.messages] == [msg]
    # S/MIME made by openssl for Dave: relayed as is too.
    from support.crypto import run
    smime = run(["openssl", "cms", "-encrypt", "-aes256", smime_pki["ec1.pem"]],
                b"Content-Type: text/plain\r\n\r\nhello dave\r\n").stdout.replace(b"\n", b"\r\n")
    smime = b"From: alice@example.org\r\nTo: bob@example.org\r\n" + smime
    assert send(r, "alice@example.org", ["bob@example.org"], smime) == {}
    assert r.up.messages[-1].content == smime


def test_encrypted_label_without_encrypted_content_is_sealed(secure, smime_pki):
    r = secure()
    fake = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: x\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nplaintext really\r\n-----END PGP MESSAGE-----\r\n--b--\r\n")
    assert send(r, "alice@example.org", ["bob@example.org"], fake) == {}
    [t] = r.up.messages
    assert b"plaintext really" not in t.content
    assert b"plaintext really" in cms_decrypt(t.content, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])

def test_policy_explain_matches_what_the_relay_does(secure):
    import json
    r = secure()
    args = [SEALGATE_BIN, "policy", "explain", "--config", str(r.sg.config_path),
            "--from", "alice@example.org", "--to", "bob@example.org", "--to", "peggy@example.org",
            "--to", "nokey@example.org", "--to", "x@eu.required.test"]
    p = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    by = {x["address"]: x for x in v["recipients"]}
    assert by["bob@example.org"]["outcome"] == "smime" and by["bob@example.org"]["key"].startswith("x509:")
    assert by["peggy@example.org"]["outcome"] == "openpgp" and by["peggy@example.org"]["key"].startswith("pgp:")
    assert by["nokey@example.org"]["outcome"] == "plain" and by["nokey@example.org"]["rule"] is None
    req = by["x@eu.required.test"]
    assert req["outcome"] == "refuse" and req["rule"]["match"] == "*.required.test"
    assert v["signing"]["signed"] == "yes"
    text = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "policy.rule[0] (*.required.test)" in text.stdout
    assert "signing as alice@example.org: yes" in text.stdout
    # The copies explain announces are the ones the relay sends for the same envelope
    # (x@eu.required.test is refused at RCPT: the others still get the message).
    plan = {",".join(c["recipients"]): (c["format"], c["signed"]) for c in v["copies"]}
    assert plan == {"bob@example.org": ("smime", True), "peggy@example.org": ("openpgp", True),
                    "nokey@example.org": ("plain", True)}, v["copies"]
    assert "copy smime, signed: bob@example.org" in text.stdout
    # The server still works after the CLI borrowed its store.
    refused = send(r, "alice@example.org",
                   ["bob@example.org", "peggy@example.org", "nokey@example.org", "x@eu.required.test"],
                   MSG)
    assert list(refused) == ["x@eu.required.test"]
    got = copies(r)
    assert sorted(got) == sorted(plan)
    kinds = {k: parse(c).get_content_type() for k, c in got.items()}
    assert kinds == {"bob@example.org": "application/pkcs7-mime",
                     "peggy@example.org": "multipart/encrypted",
                     "nokey@example.org": "multipart/signed"}, kinds


def test_result_header_is_off_by_default_and_added_when_asked(secure):
    r = secure()
    assert send(r, "alice@example.org", ["bob@example.org"], MSG) == {}
    assert b"X-Sealgate-Result" not in r.up.messages[-1].content
    r2 = secure(policy={**POLICY, "result_header": True})
    assert send(r2, "alice@example.org", ["bob@example.org", "nokey@example.org"], MSG) == {}
    got = copies(r2)
    assert got["bob@example.org"].startswith(b"X-Sealgate-Result: encrypted=smime; signed=yes\r\n")
    assert got["nokey@example.org"].startswith(b"X-Sealgate-Result: encrypted=no; signed=yes\r\n")


def test_unauthenticated_clients_are_not_signed_for_by_default(secure):
    r = secure(sign_without_auth=False)
    assert send(r, "alice@example.org", ["nokey@example.org"], MSG) == {}
    assert b"multipart/signed" not in r.up.messages[-1].content


def test_refusal_to_sign_names_no_internal_setting(secure):
    """SECURITY.md I14: the client learns that the message must be signed and cannot be, not
    which configuration key said so (the reason is logged)."""
    r = secure(sign_without_auth=False, policy={**POLICY, "sign": "required"})
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(r, "alice@example.org", ["nokey@example.org"], MSG)
    assert e.value.smtp_code == 550 and b"5.7.1" in e.value.smtp_error
    text = e.value.smtp_error.decode()
    for internal in ("sign_without_auth", "listen", "authenticated", "policy"):
        assert internal not in text, text
    assert r.up.messages == []
    assert "sign_without_auth" in r.sg.stderr_text()


def test_authenticated_client_is_signed_for_only_as_itself(secure, smime_pki):
    up = {"auth": {"user": "alice@example.org", "password": "pw"}}
    r = secure(upstream=up, sign_without_auth=False)
    with smtplib.SMTP("127.0.0.1", r.port, timeout=60) as s:
        s.starttls(context=client_ssl_context(r.pki["ca"]))
        s.login("alice@example.org", "pw")
        assert s.sendmail("alice@example.org", ["nokey@example.org"], MSG) == {}
    signed = r.up.messages[-1].content
    assert b"multipart/signed" in signed
    assert b"the figures" in cms_verify(signed, smime_pki["ca.pem"])
    # Authenticated as someone else: the From header and envelope say alice, but no signature.
    r2 = secure(upstream={"auth": {"user": "bob@example.org", "password": "pw"}}, sign_without_auth=False)
    with smtplib.SMTP("127.0.0.1", r2.port, timeout=60) as s:
        s.starttls(context=client_ssl_context(r2.pki["ca"]))
        s.login("bob@example.org", "pw")
        assert s.sendmail("alice@example.org", ["nokey@example.org"], MSG) == {}
    assert b"multipart/signed" not in r2.up.messages[-1].content


def test_client_encrypted_label_does_not_bypass_required(secure, smime_pki):
    # A plaintext body merely labelled "encrypted" must not reach a "required" recipient as is.
    policy = {**POLICY, "rule": [{"match": "example.org", "encrypt": "required"}]}
    r = secure(policy=policy)
    fake = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: x\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"
            b"this is not encrypted at all\r\n")
    assert send(r, "alice@example.org", ["bob@example.org"], fake) == {}
    [t] = r.up.messages
    assert b"this is not encrypted" not in t.content
    inner = cms_decrypt(t.content, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])
    assert b"this is not encrypted at all" in inner


def test_smime_and_openpgp_options_from_the_policy(secure, smime_pki, pgp):
    policy = {**POLICY, "smime_cipher": "aes256-gcm", "smime_key_transport": "rsa-oaep",
              "smime_opaque_signing": True, "autocrypt": True}
    r = secure(policy=policy)
    assert send(r, "alice@example.org", ["bob@example.org", "peggy@example.org", "nokey@example.org"], MSG) == {}
    got = copies(r)
    bob = got["bob@example.org"]
    assert b"smime-type=authEnveloped-data" in bob
    inner = cms_decrypt(bob, smime_pki["rsa1.pem"], smime_pki["rsa1.key"])
    assert b"the figures" in cms_verify(inner, smime_pki["ca.pem"])
    nokey = got["nokey@example.org"]
    assert b"smime-type=signed-data" in nokey and b"multipart/signed" not in nokey
    assert b"the figures" in cms_verify(nokey, smime_pki["ca.pem"])
    assert b"Autocrypt:" in got["peggy@example.org"].split(b"\r\n\r\n", 1)[0]


def test_removed_sender_identity_is_not_used_again(secure):
    """Sender identities are cached by the server; a key command must invalidate them."""
    import json
    r = secure()
    assert send(r, "alice@example.org", ["nokey@example.org"], MSG) == {}
    assert b"multipart/signed" in r.up.messages[-1].content
    listed = json.loads(keys_cli(r.sg, "list", "--json").stdout)
    for key in listed:
        if key["secret"] and "alice@example.org" in key["addresses"]:
            keys_cli(r.sg, "remove", "--force", key["id"])
    assert send(r, "alice@example.org", ["nokey@example.org"], MSG) == {}
    assert b"multipart/signed" not in r.up.messages[-1].content
