"""The durable queue (issue 10) with a real Postfix as the upstream: the second copy of a
message is refused by Postfix (450, then 550) after the first was accepted.

The private Postfix (tests/e2e/postfix.sh) delivers each recipient into its own Maildir
(DIR/mail/<name>/) and applies a verdict map after the content of a message
(smtpd_end_of_data_restrictions = check_recipient_access hash:...). After the content, not
at RCPT: at RCPT time the client gets Postfix's own verdict on its session (the fast path);
after the content, Postfix knows the recipient because each of sealgate's copies has exactly
one. Messages to bob@example.org (S/MIME key) and nokey@example.org (no key) become two
copies in RCPT order, as in test_queue.py. Needs root and postfix; skipped otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import Relay
from test_postfix_e2e import SCRIPT, PostfixInstance, free_port
from test_postfix_recipes import stop_postfix, wait_log
from test_queue import POLICY, entries, import_bob, msg, parse_report, queue_cli, send, smime_pki  # noqa: F401

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("postfix") is None,
    reason="the queue with Postfix needs root and postfix installed")

BOB, NOKEY, ALICE = "bob@example.org", "nokey@example.org", "alice@example.org"
BODY = b"The figures, in plain words.\r\n"


class VerdictPostfix(PostfixInstance):
    """A Maildir per recipient, and `verdicts(...)` to change what Postfix answers after the
    content for a recipient (postmap + postfix reload)."""

    def maildir_of(self, address: str) -> Path:
        return Path(self.dir) / "mail" / address.split("@")[0]

    def verdicts(self, table: dict) -> None:
        text = "".join(f"{a} {v}\n" for a, v in table.items()) or "# none\n"
        (Path(self.dir) / "maps" / "verdicts").write_text(text)
        subprocess.run(["postmap", str(Path(self.dir) / "maps" / "verdicts")], check=True, timeout=30)
        if (Path(self.dir) / "spool" / "pid" / "master.pid").exists():
            subprocess.run(["postfix", "-c", str(Path(self.dir) / "etc"), "reload"], check=True,
                           capture_output=True, timeout=30)

    def messages(self, address: str, *needles: bytes) -> list:
        found = []
        for sub in ("new", "cur"):
            d = self.maildir_of(address) / sub
            found += [f.read_bytes() for f in sorted(d.iterdir())] if d.is_dir() else []
        return [m for m in found if all(n in m for n in needles)]

    def wait_messages(self, address: str, *needles: bytes, count: int = 1, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages(address, *needles)) < count:
            time.sleep(0.2)
        got = self.messages(address, *needles)
        assert len(got) >= count, f"{address}: {len(got)} of {count} {needles!r}:\n{self.log()[-3000:]}"
        return got


@pytest.fixture(scope="module")
def postfix_q(pki):
    d = Path(tempfile.mkdtemp(prefix="sealgate-queue-postfix-"))
    os.chmod(d, 0o755)
    (d / "maps").mkdir(mode=0o755)
    (d / "maps" / "mailboxes").write_text("".join(f"{a} {a.split('@')[0]}/\n" for a in (BOB, NOKEY, ALICE)))
    (d / "main-extra.cf").write_text(
        f"virtual_mailbox_maps = texthash:{d}/maps/mailboxes\n"
        f"smtpd_end_of_data_restrictions = check_recipient_access hash:{d}/maps/verdicts\n")
    inst = VerdictPostfix(str(d), free_port())
    inst.verdicts({})
    r = subprocess.run(["sh", str(SCRIPT), "start", inst.dir, str(inst.port), pki["server"], pki["server_key"],
                        str(d / "main-extra.cf")], capture_output=True, text=True, timeout=90)
    try:
        assert r.returncode == 0, f"could not start postfix: {r.stdout}\n{r.stderr}\n{inst.log()}"
        yield inst
    finally:
        stop_postfix(inst)


@pytest.fixture
def via_postfix(postfix_q, sealgate_factory, pki, smime_pki):
    """sealgate in front of the verdict Postfix; the queue retries only when told to
    (`sealgate queue retry`), so every attempt in a test is one the test made."""
    def make(verdicts: dict) -> Relay:
        postfix_q.verdicts(verdicts)
        sg = sealgate_factory(postfix_q.address, extra={
            "policy": POLICY, "queue": {"retry_initial": 3600, "retry_max": 7200, "scan_interval": 1}})
        import_bob(sg, smime_pki)
        return Relay(None, sg, pki)
    return make


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def marked(marker: str) -> bytes:
    return msg(marker, BODY)  # Subject: figures <marker>


def test_second_copy_450_waits_in_the_queue_then_is_delivered_once(via_postfix, postfix_q):
    r = via_postfix({NOKEY: "450 4.2.0 try later"})
    marker = uuid.uuid4().hex
    subject = f"Subject: figures {marker}".encode()
    code, text = send(r.port, r.pki["ca"], [BOB, NOKEY], marked(marker))
    assert code == 250 and b"queued" in text, (code, text)

    # bob's sealed copy is delivered; nokey's plain copy waits in sealgate's queue with
    # Postfix's reply.
    [sealed] = postfix_q.wait_messages(BOB, subject)
    assert b"application/pkcs7-mime" in sealed and b"The figures" not in sealed
    [e] = entries(r)
    assert [x["path"]["address"] for x in e["recipients"]] == [NOKEY] and e["encrypted"] is False
    assert e["recipients"][0]["state"] == "pending" and e["attempts"] == 1
    assert "450 4.2.0" in e["last_reply"] and "try later" in e["last_reply"], e
    wait_log(postfix_q, f"reject: END-OF-MESSAGE from localhost[127.0.0.1]: 450 4.2.0 <{NOKEY}>")

    # A retry while Postfix still says 450: still queued, one more attempt.
    queue_cli(r, "retry", "--all")
    assert wait_until(lambda: entries(r)[0]["attempts"] == 2, 20), entries(r)
    assert postfix_q.messages(NOKEY, subject) == []

    # Postfix takes it now: the retry delivers it, and nobody gets it twice.
    postfix_q.verdicts({})
    queue_cli(r, "retry", "--all")
    assert wait_until(lambda: entries(r) == [], 20), entries(r)
    [plain] = postfix_q.wait_messages(NOKEY, subject)
    assert b"The figures" in plain and b"pkcs7" not in plain
    time.sleep(1.0)  # anything Postfix would still deliver
    assert len(postfix_q.messages(BOB, subject)) == 1 and len(postfix_q.messages(NOKEY, subject)) == 1
    assert postfix_q.messages(ALICE) == [], "no DSN for a delivered message"


def dsn_in_maildir(postfix_q, marker: str):
    """The DSN for the message `marker` in alice's Maildir, parsed."""
    [raw] = postfix_q.wait_messages(ALICE, b"multipart/report", marker.encode())
    return raw, parse_report(raw)


def test_second_copy_550_gives_a_dsn_through_postfix(via_postfix, postfix_q):
    r = via_postfix({NOKEY: "550 5.7.1 no mailbox here"})
    marker = uuid.uuid4().hex
    code, _ = send(r.port, r.pki["ca"], [BOB, NOKEY], marked(marker), mail_opts=["RET=HDRS", "ENVID=env+2B42"],
                   rcpt_opts={NOKEY: ["NOTIFY=FAILURE", "ORCPT=rfc822;NoKey@example.org"]})
    assert code == 250
    raw, (m, parts, per_msg, [rc]) = dsn_in_maildir(postfix_q, marker)
    # From sealgate, through Postfix, to the envelope sender; with the null sender.
    assert b"Return-Path: <>" in raw and f"Delivered-To: {ALICE}".encode() in raw
    assert per_msg["Original-Envelope-Id"] == "env+42"
    assert per_msg["Reporting-MTA"] == "dns; sealgate.test"
    assert rc["Final-Recipient"] == f"rfc822; {NOKEY}"
    assert rc["Original-Recipient"] == "rfc822; NoKey@example.org"
    assert rc["Action"] == "failed" and rc["Status"] == "5.7.1"
    assert f"550 5.7.1 <{NOKEY}>: Recipient address rejected: no mailbox here" in rc["Diagnostic-Code"], rc
    # RET=HDRS: the header section only.
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert f"Subject: figures {marker}".encode() in raw and b"The figures" not in raw
    assert len(postfix_q.messages(BOB, marker.encode())) == 1
    assert postfix_q.messages(NOKEY, marker.encode()) == []
    assert wait_until(lambda: entries(r) == [], 20), entries(r)


def test_dsn_of_a_refused_encrypted_copy_through_postfix_holds_no_plaintext(via_postfix, postfix_q):
    # nokey's plain copy first (accepted), bob's S/MIME copy refused; RET=FULL asked.
    r = via_postfix({BOB: "550 5.7.1 no mailbox here"})
    marker = uuid.uuid4().hex
    code, _ = send(r.port, r.pki["ca"], [NOKEY, BOB], marked(marker), mail_opts=["RET=FULL"])
    assert code == 250
    raw, (_, parts, _, [rc]) = dsn_in_maildir(postfix_q, marker)
    assert rc["Final-Recipient"] == f"rfc822; {BOB}" and rc["Status"] == "5.7.1"
    assert "Recipient address rejected" in rc["Diagnostic-Code"]
    assert parts[2].get_content_type() == "text/rfc822-headers"
    # The sealed copy's header section (what was to be sent), none of its content.
    headers = raw.split(b"text/rfc822-headers", 1)[1]
    assert b"application/pkcs7-mime" in headers and b"MII" not in headers
    assert b"The figures" not in raw
    assert len(postfix_q.messages(NOKEY, marker.encode())) == 1
    assert postfix_q.messages(BOB, marker.encode()) == []
