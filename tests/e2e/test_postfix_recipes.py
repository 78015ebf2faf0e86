"""The Postfix recipes of deploy/postfix/, each with a real, private Postfix
(tests/e2e/postfix.sh, which applies the recipe's main.cf settings and master.cf lines as
they are in the repository; only the port numbers are replaced by free ones).

Edge: client -> sealgate (port 25's role) -> Postfix on a loopback port, XCLIENT.
The open-relay test: the client's real address (127.0.0.2) is not in Postfix's mynetworks
(127.0.0.1/32, the address sealgate connects from): relaying to a foreign domain through
sealgate is refused, and Postfix logs the real client. Submission: the client authenticates
through sealgate to Postfix's Cyrus SASL (an sasldb made by saslpasswd2), may then relay, and
its mail is signed.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from support.clients import RawSMTP, dot_stuff, ehlo_keywords
from support import REPO
from test_postfix_e2e import SCRIPT, PostfixInstance, free_port

RECIPES = REPO / "deploy" / "postfix"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("postfix") is None,
    reason="Postfix recipes need root and postfix installed")

# What the test adds to a recipe: the domains this Postfix delivers itself (everything else is
# "foreign"), and mynetworks = the host only (Postfix's default: its own host).
TEST_MAIN = """
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = e2e.test example.org
smtpd_recipient_restrictions =
"""


# The users of the recipes' sasldb (Cyrus SASL): login name -> password.
SASL_USERS = {"alice@example.org": "alice-sasl-password"}
# Where a recipe's sasl/smtpd.conf and main.cf put the SASL files.
RECIPE_SASL_DIR = "/etc/postfix/sasl"


def install_sasl(recipe: str, d: Path) -> str:
    """The recipe's sasl/smtpd.conf in the instance (its paths made the instance's), and an
    sasldb with SASL_USERS made by saslpasswd2, readable by Postfix. Returns the directory."""
    if shutil.which("saslpasswd2") is None:
        pytest.fail("saslpasswd2 not found: apt install sasl2-bin libsasl2-modules (tests/run.sh does)")
    sasl = d / "etc" / "sasl"
    sasl.mkdir(parents=True)
    conf = (RECIPES / recipe / "sasl" / "smtpd.conf").read_text()
    (sasl / "smtpd.conf").write_text(conf.replace(RECIPE_SASL_DIR, str(sasl)))
    db = sasl / "sasldb2"
    for login, password in SASL_USERS.items():
        user, realm = login.split("@")
        subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(db), "-u", realm, user],
                       input=password, text=True, check=True, capture_output=True, timeout=30)
    shutil.chown(db, "root", "postfix")
    os.chmod(db, 0o640)
    return str(sasl)


def start_postfix(pki, recipe: str, ports: dict) -> PostfixInstance:
    """ports: {"127.0.0.1:10025": free port, ...} (the text to find, with the port to put
    in it); the first is the one waited for."""
    d = tempfile.mkdtemp(prefix=f"sealgate-{recipe}-")
    os.chmod(d, 0o755)
    main = (RECIPES / recipe / "main.cf").read_text() + TEST_MAIN
    master = (RECIPES / recipe / "master.cf").read_text()
    for old, new in ports.items():
        port_in_old = old.split(":")[1].split()[0]
        main = main.replace(old, old.replace(port_in_old, str(new)))
        master = master.replace(old, old.replace(port_in_old, str(new)))
    if (RECIPES / recipe / "sasl").is_dir():
        main = main.replace(RECIPE_SASL_DIR, install_sasl(recipe, Path(d)))
    (Path(d) / "recipe-main.cf").write_text(main)
    (Path(d) / "recipe-master.cf").write_text(master)
    port = next(iter(ports.values()))
    r = subprocess.run(["sh", str(SCRIPT), "start", d, str(port), pki["server"], pki["server_key"],
                        str(Path(d) / "recipe-main.cf"), str(Path(d) / "recipe-master.cf")],
                       capture_output=True, text=True, timeout=90)
    if r.returncode != 0:
        log = subprocess.run(["sh", str(SCRIPT), "log", d], capture_output=True, text=True).stdout
        subprocess.run(["sh", str(SCRIPT), "stop", d], capture_output=True, timeout=60)
        pytest.fail(f"could not start the {recipe} postfix: {r.stdout}\n{r.stderr}\n{log}")
    return PostfixInstance(d, port)


def stop_postfix(inst: PostfixInstance) -> None:
    subprocess.run(["sh", str(SCRIPT), "stop", inst.dir], capture_output=True, timeout=60)
    shutil.rmtree(inst.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def edge_postfix(pki):
    inst = start_postfix(pki, "edge", {"127.0.0.1:10025": free_port()})
    try:
        yield inst
    finally:
        stop_postfix(inst)


def edge_sealgate(sealgate_factory, postfix, **kw):
    # What deploy/postfix/edge/main.cf expects of sealgate: the default forward_client.
    return sealgate_factory(postfix.address, upstream_cfg={"forward_client": None}, **kw)


def wait_log(postfix, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = postfix.log()
        if needle in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in the postfix log:\n{postfix.log()[-3000:]}")


def client(sg, pki, source="127.0.0.2") -> RawSMTP:
    c = RawSMTP("127.0.0.1", sg.port, ca_file=pki["ca"], timeout=20, source=source)
    c.start(tls=True, name="outsider.example")
    return c


def test_edge_open_relay_attempt_is_refused_and_logged_with_the_real_client(edge_postfix, sealgate_factory, pki):
    sg = edge_sealgate(sealgate_factory, edge_postfix)
    c = client(sg, pki)
    assert c.cmd("MAIL FROM:<spammer@outsider.example>").code == 250
    r = c.cmd("RCPT TO:<victim@foreign.example>")
    # Postfix's verdict on the real client, passed through by sealgate.
    assert (r.code, r.enhanced) == (554, "5.7.1"), r
    assert "Relay access denied" in r.text, r
    # Local domains are still served.
    assert c.cmd("RCPT TO:<bob@e2e.test>").code == 250
    c.quit()
    log = wait_log(edge_postfix, "victim@foreign.example")
    reject = [l for l in log.splitlines() if "victim@foreign.example" in l and "reject" in l]
    assert reject and "unknown[127.0.0.2]" in reject[-1] and "helo=<outsider.example>" in reject[-1], reject


def test_edge_without_xclient_the_same_attempt_would_relay(edge_postfix, sealgate_factory, pki):
    """The negative control: forward_client = "none" in front of a Postfix that trusts its own
    host is an open relay. This is why "xclient" is the default and fails closed."""
    sg = sealgate_factory(edge_postfix.address, upstream_cfg={"forward_client": "none"})
    c = client(sg, pki)
    assert c.cmd("MAIL FROM:<spammer@outsider.example>").code == 250
    assert c.cmd("RCPT TO:<victim@foreign.example>").code == 250, "Postfix took sealgate for the client"
    c.cmd("RSET")
    c.quit()


def test_edge_delivers_and_postfix_records_the_real_client(edge_postfix, sealgate_factory, pki):
    sg = edge_sealgate(sealgate_factory, edge_postfix)
    c = client(sg, pki)
    marker = uuid.uuid4().hex
    assert c.cmd("MAIL FROM:<someone@outsider.example>").code == 250
    assert c.cmd("RCPT TO:<bob@e2e.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(f"From: someone@outsider.example\r\nTo: bob@e2e.test\r\nSubject: {marker}\r\n\r\nhi\r\n".encode()))
    assert c.reply().code == 250
    c.quit()
    delivered = edge_postfix.wait_for_message(marker.encode())
    # The Received header Postfix adds names the real client and its HELO, under TLS.
    received = delivered.split(b"\n\n", 1)[0].decode()
    assert "from outsider.example (unknown [127.0.0.2])" in received, received
    assert "with ESMTPS" in received, received
    wait_log(edge_postfix, "client=unknown[127.0.0.2]")


def test_edge_xclient_not_authorized_fails_closed(edge_postfix, sealgate_factory, pki):
    """A Postfix without the recipe (no smtpd_authorized_xclient_hosts: XCLIENT not offered)
    behind the default forward_client: 451 4.7.0, and Postfix never sees a MAIL."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="sealgate-noxclient-")
    os.chmod(d, 0o755)
    r = subprocess.run(["sh", str(SCRIPT), "start", d, str(port), pki["server"], pki["server_key"]],
                       capture_output=True, text=True, timeout=90)
    inst = PostfixInstance(d, port)
    try:
        assert r.returncode == 0, r.stderr
        sg = edge_sealgate(sealgate_factory, inst)
        c = client(sg, pki)
        reply = c.cmd("MAIL FROM:<a@outsider.example>")
        assert (reply.code, reply.enhanced) == (451, "4.7.0"), reply
        c.quit()
        log = inst.log()
        assert "MAIL FROM" not in log and "from=<a@outsider.example>" not in log, log[-2000:]
    finally:
        stop_postfix(inst)


def test_edge_required_recipient_without_key_is_refused_at_rcpt(edge_postfix, sealgate_factory, pki):
    sg = edge_sealgate(sealgate_factory, edge_postfix,
                       extra={"policy": {"encrypt": "opportunistic", "rule": [
                           {"match": "e2e.test", "encrypt": "required"}]}})
    c = client(sg, pki)
    assert c.cmd("MAIL FROM:<required@outsider.example>").code == 250
    r = c.cmd("RCPT TO:<bob@e2e.test>")
    assert (r.code, r.enhanced) == (550, "5.7.1"), r
    assert "Encryption is required" in r.text
    assert c.cmd("DATA").code == 554  # no recipient left
    c.quit()
    # sealgate refused it itself, before Postfix: nothing of it was queued or logged there.
    time.sleep(0.5)
    assert "required@outsider.example" not in edge_postfix.log()


# --------------------------------------------------------------------------- edge: submission
ALICE, ALICE_PASSWORD = next(iter(SASL_USERS.items()))


@pytest.fixture(scope="module")
def signer_pki(tmp_path_factory):
    """The S/MIME PKI whose signer is alice@example.org (keys/generate.sh --profile smime)."""
    from support.pki import make_smime_pki
    return make_smime_pki(str(tmp_path_factory.mktemp("smime")))


def signing_sealgate(sealgate_factory, postfix, signer_pki):
    """Edge sealgate whose store holds Alice's signing key: it signs for her once she has
    authenticated as alice@example.org (sign_without_auth is off)."""
    from conftest import SEALGATE_BIN
    sg = edge_sealgate(sealgate_factory, postfix,
                       extra={"policy": {"encrypt": "opportunistic", "sign": True}})
    p = subprocess.run([SEALGATE_BIN, "keys", "import", "--private", signer_pki["signer.pem"],
                        signer_pki["signer.key"], "--config", str(sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return sg


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def authenticate(c: RawSMTP, mechanism: str, login: str, password: str):
    """AUTH PLAIN (initial response) or AUTH LOGIN (two challenges); the final reply."""
    if mechanism == "PLAIN":
        return c.cmd(f"AUTH PLAIN {b64(chr(0) + login + chr(0) + password)}")
    challenge = c.cmd("AUTH LOGIN")
    assert challenge.code == 334, challenge
    assert c.cmd(b64(login)).code == 334
    return c.cmd(b64(password))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_edge_submission_with_auth_relays_and_is_signed(edge_postfix, sealgate_factory, pki,
                                                        signer_pki, mechanism):
    from support.crypto import cms_verify
    sg = signing_sealgate(sealgate_factory, edge_postfix, signer_pki)
    c = RawSMTP("127.0.0.1", sg.port, ca_file=pki["ca"], timeout=20, source="127.0.0.2")
    ehlo = c.start(tls=True, name="laptop.example")
    assert mechanism in ehlo_keywords(ehlo).get("AUTH", "").split(), ehlo  # Postfix's, through sealgate
    r = authenticate(c, mechanism, ALICE, ALICE_PASSWORD)
    assert (r.code, r.enhanced) == (235, "2.7.0"), r
    # Authenticated: Postfix lets this client relay (permit_sasl_authenticated).
    assert c.cmd(f"MAIL FROM:<{ALICE}>").code == 250
    assert c.cmd("RCPT TO:<friend@foreign.example>").code == 250
    assert c.cmd("RSET").code == 250
    marker = uuid.uuid4().hex
    assert c.cmd(f"MAIL FROM:<{ALICE}>").code == 250
    assert c.cmd("RCPT TO:<bob@e2e.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(f"From: Alice <{ALICE}>\r\nTo: bob@e2e.test\r\nSubject: {marker}\r\n\r\n"
                     f"signed {marker}\r\n".encode()))
    assert c.reply(timeout=30).code == 250
    c.quit()
    delivered = edge_postfix.wait_for_message(marker.encode()).replace(b"\n", b"\r\n")
    assert b"multipart/signed" in delivered.split(b"\r\n\r\n", 1)[0], delivered[:2000]
    assert f"signed {marker}".encode() in cms_verify(delivered, signer_pki["ca.pem"])
    log = wait_log(edge_postfix, f"sasl_method={mechanism}, sasl_username={ALICE}")
    assert any("unknown[127.0.0.2]" in l for l in log.splitlines() if f"sasl_method={mechanism}" in l)


def test_edge_wrong_password_gets_postfix_s_535_and_no_relaying(edge_postfix, sealgate_factory, pki,
                                                                 signer_pki):
    sg = signing_sealgate(sealgate_factory, edge_postfix, signer_pki)
    c = client(sg, pki)
    r = authenticate(c, "PLAIN", ALICE, "wrong-" + ALICE_PASSWORD)
    assert (r.code, r.enhanced) == (535, "5.7.8"), r
    assert "authentication failed" in r.text, r  # Postfix's own text
    # Still unauthenticated: a foreign domain is refused, as for any outsider.
    assert c.cmd(f"MAIL FROM:<{ALICE}>").code == 250
    r = c.cmd("RCPT TO:<friend@foreign.example>")
    assert (r.code, r.enhanced) == (554, "5.7.1") and "Relay access denied" in r.text, r
    c.quit()


# --------------------------------------------------------------------------- before-queue
@pytest.fixture(scope="module")
def before_queue(pki, tmp_path_factory):
    """Postfix on "port 25" with smtpd_proxy_filter -> sealgate (plain, loopback) -> the
    reinjection smtpd (STARTTLS, XFORWARD)."""
    front, filt, reinject = free_port(), free_port(), free_port()
    inst = start_postfix(pki, "before-queue", {"127.0.0.1:25 inet": front, "127.0.0.1:10025": filt,
                                               "127.0.0.1:10026": reinject})
    inst.filter_port, inst.reinject_port = filt, reinject
    try:
        yield inst
    finally:
        stop_postfix(inst)


def start_filter(sealgate_factory, bq, **kw):
    return sealgate_factory(
        f"127.0.0.1:{bq.reinject_port}", upstream_cfg={"forward_client": "xforward"},
        listen=[{"address": f"127.0.0.1:{bq.filter_port}", "tls": "none", "cert": None, "key": None,
                 "allow_from": ["127.0.0.1"]}], **kw)


def front_client(bq, pki) -> RawSMTP:
    c = RawSMTP("127.0.0.1", bq.port, ca_file=pki["ca"], timeout=30, source="127.0.0.2")
    c.start(tls=True, name="outsider.example")
    return c


def test_before_queue_relay_checks_are_postfix_s_on_the_real_client(before_queue, sealgate_factory, pki):
    start_filter(sealgate_factory, before_queue)
    c = front_client(before_queue, pki)
    assert c.cmd("MAIL FROM:<spammer@outsider.example>").code == 250
    r = c.cmd("RCPT TO:<victim@foreign.example>")
    assert (r.code, r.enhanced) == (554, "5.7.1") and "Relay access denied" in r.text, r
    c.quit()
    log = wait_log(before_queue, "victim@foreign.example")
    assert any("unknown[127.0.0.2]" in l for l in log.splitlines() if "victim@foreign.example" in l)


def test_before_queue_seals_and_reinjects(before_queue, sealgate_factory, pki, tmp_path):
    from support.crypto import cms_decrypt
    from support.pki import make_smime_pki
    from conftest import SEALGATE_BIN
    spki = make_smime_pki(str(tmp_path / "pki"))
    sg = start_filter(sealgate_factory, before_queue, extra={"policy": {"encrypt": "opportunistic", "rule": [
        {"match": "e2e.test", "encrypt": "required"}]}})
    p = subprocess.run([SEALGATE_BIN, "keys", "import", spki["rsa1.pem"], "--config", str(sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    marker = uuid.uuid4().hex
    c = front_client(before_queue, pki)
    assert c.cmd("MAIL FROM:<someone@outsider.example>").code == 250
    assert c.cmd("RCPT TO:<bob@example.org>").code == 250
    # A required recipient without key: sealgate's refusal reaches the client through Postfix.
    r = c.cmd("RCPT TO:<carol@e2e.test>")
    assert (r.code, r.enhanced) == (550, "5.7.1") and "Encryption is required" in r.text, r
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(f"From: someone@outsider.example\r\nTo: bob@example.org\r\nSubject: bq\r\n\r\n"
                     f"secret {marker}\r\n".encode()))
    final = c.reply(timeout=30)
    assert final.code == 250, final
    c.quit()
    # Delivered sealed: the marker is only readable after decryption.
    deadline = time.monotonic() + 30
    found = None
    while time.monotonic() < deadline and found is None:
        for sub in ("new", "cur"):
            d = before_queue.maildir / sub
            for f in (d.iterdir() if d.is_dir() else []):
                data = f.read_bytes()
                if b"application/pkcs7-mime" in data and b"Subject: bq" in data:
                    found = data
        time.sleep(0.2)
    assert found is not None, before_queue.log()[-3000:]
    assert marker.encode() not in found
    plain = cms_decrypt(found.replace(b"\n", b"\r\n"), spki["rsa1.pem"], spki["rsa1.key"])
    assert f"secret {marker}".encode() in plain
    # The reinjection server took sealgate's XFORWARD: it logs sealgate's session id as the
    # original queue id (the front Postfix, sealgate's client, as the original client).
    log = wait_log(before_queue, "orig_queue_id=")
    assert any("orig_client=" in l for l in log.splitlines() if "orig_queue_id=" in l), log[-3000:]


# --------------------------------------------------------------------------- after-queue
@pytest.fixture(scope="module")
def after_queue(pki):
    """Postfix on "port 25" with content_filter = sealgate:[127.0.0.1]:<filter> -> sealgate
    (plain, loopback) -> the reinjection smtpd (STARTTLS, XFORWARD)."""
    front, filt, reinject = free_port(), free_port(), free_port()
    inst = start_postfix(pki, "after-queue", {"127.0.0.1:25 inet": front, "[127.0.0.1]:10025": filt,
                                              "127.0.0.1:10026": reinject})
    inst.filter_port, inst.reinject_port = filt, reinject
    try:
        yield inst
    finally:
        stop_postfix(inst)


def find_mail(postfix, *needles: bytes, timeout: float = 40.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sub in ("new", "cur"):
            d = postfix.maildir / sub
            for f in (d.iterdir() if d.is_dir() else []):
                data = f.read_bytes()
                if all(n in data for n in needles):
                    return data
        time.sleep(0.2)
    raise AssertionError(f"no message with {needles!r} within {timeout}s:\n{postfix.log()[-4000:]}")


def submit(postfix, pki, sender: str, rcpts: list, body: bytes) -> None:
    c = RawSMTP("127.0.0.1", postfix.port, ca_file=pki["ca"], timeout=30)
    c.start(tls=True, name="client.example")
    assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(body))
    assert c.reply(timeout=30).code == 250
    c.quit()


def test_after_queue_seals_bounces_and_retries(after_queue, sealgate_factory, pki, tmp_path):
    from support.crypto import cms_decrypt
    from support.pki import make_smime_pki
    from conftest import SEALGATE_BIN
    spki = make_smime_pki(str(tmp_path / "pki"))
    policy = {"policy": {"encrypt": "opportunistic", "rule": [{"match": "e2e.test", "encrypt": "required"}]}}
    sg = start_filter(sealgate_factory, after_queue, extra=policy)
    p = subprocess.run([SEALGATE_BIN, "keys", "import", spki["rsa1.pem"], "--config", str(sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr

    # Sealed: bob has a key.
    marker = uuid.uuid4().hex
    submit(after_queue, pki, "alice@example.org", ["bob@example.org"],
           f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: aq1\r\n\r\nsecret {marker}\r\n".encode())
    sealed = find_mail(after_queue, b"Subject: aq1", b"application/pkcs7-mime")
    assert marker.encode() not in sealed
    assert f"secret {marker}".encode() in cms_decrypt(sealed.replace(b"\n", b"\r\n"), spki["rsa1.pem"], spki["rsa1.key"])

    # Required without key: Postfix accepted it (after-queue), sealgate refuses it, Postfix
    # bounces to the sender with sealgate's reply text.
    submit(after_queue, pki, "alice@example.org", ["carol@e2e.test"],
           b"From: alice@example.org\r\nTo: carol@e2e.test\r\nSubject: aq2\r\n\r\nno key\r\n")
    bounce = find_mail(after_queue, b"carol@e2e.test", b"Undelivered Mail Returned to Sender")
    assert b"Encryption is required for <carol@e2e.test>" in bounce, bounce[:3000]
    assert b"550 5.7.1" in bounce

    # sealgate down: the mail waits in Postfix's queue; sealgate back on the same port: delivered.
    sg.stop()
    marker = uuid.uuid4().hex
    submit(after_queue, pki, "alice@example.org", ["bob@example.org"],
           f"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: aq3 {marker}\r\n\r\nlater\r\n".encode())
    wait_log(after_queue, "status=deferred", timeout=20)
    assert b"aq3" not in b"".join(f.read_bytes() for sub in ("new", "cur")
                                  for f in (after_queue.maildir / sub).iterdir())
    start_filter(sealgate_factory, after_queue, extra=policy)  # (a new, empty key store)
    find_mail(after_queue, f"Subject: aq3 {marker}".encode(), timeout=60)
