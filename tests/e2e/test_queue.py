"""The durable queue (issue 10): a later copy that fails after an earlier one was accepted is
queued durably, the client gets 250, the queue delivers it (retry with back-off) or returns it
to the sender (DSN); `sealgate queue ...`; corrupt entries; a full/unwritable queue; kill -9.

Messages to bob@example.org (S/MIME key) and nokey@example.org (no key) become two copies in
RCPT order: an S/MIME one and a plain one."""
from __future__ import annotations

import email
import email.policy
import json
import os
import random
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import SEALGATE_BIN, Sealgate
from support.clients import client_ssl_context
from support.pki import make_smime_pki

POLICY = {"encrypt": "opportunistic", "sign": False, "format": "auto"}
FAST_QUEUE = {"retry_initial": 1, "retry_max": 2, "scan_interval": 1}


@pytest.fixture(scope="module")
def smime_pki():
    d = tempfile.mkdtemp(prefix="sealgate-queue-pki-")
    yield make_smime_pki(d)
    shutil.rmtree(d, ignore_errors=True)


def import_bob(sg, smime_pki) -> None:
    p = subprocess.run([SEALGATE_BIN, "keys", "import", smime_pki["rsa1.pem"], "--config", str(sg.config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def queued(relay_factory, smime_pki):
    def make(upstream=None, queue=None):
        q = dict(FAST_QUEUE)
        q.update(queue or {})
        r = relay_factory(upstream={"dsn": True, **(upstream or {})}, extra={"policy": POLICY, "queue": q})
        import_bob(r.sg, smime_pki)
        r.queue_dir = Path(r.sg.config["store"]["path"]).parent / "queue"
        return r
    return make


def msg(n: int = 1, body: bytes = b"The figures, in plain words.\r\n") -> bytes:
    return (b"From: Alice <alice@example.org>\r\nTo: bob@example.org, nokey@example.org\r\n"
            b"Subject: figures " + str(n).encode() + b"\r\nMessage-ID: <q-" + str(n).encode() + b"@example.org>\r\n"
            b"\r\n" + body)


def send(port: int, ca: str, rcpts: list, message: bytes, mail_opts=(), rcpt_opts=None, timeout=60):
    """Returns the final reply (code, text)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.starttls(context=client_ssl_context(ca))
        s.ehlo()
        code, text = s.mail("alice@example.org", list(mail_opts))
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = s.rcpt(r, list((rcpt_opts or {}).get(r, [])))
            assert code == 250, (r, code, text)
        return s.data(message)


def fail_nokey(reply: str):
    """Final reply script: copies to nokey@ get `reply`, the others 250."""
    return lambda txn: reply if b"nokey@example.org" in txn.rcpt_addrs else "250 2.0.0 ok"


def queue_cli(r, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([SEALGATE_BIN, "queue", *args, "--config", str(r.sg.config_path)],
                       capture_output=True, text=True, timeout=30)
    if check:
        assert p.returncode == 0, f"sealgate queue {args}:\n{p.stdout}\n{p.stderr}"
    return p


def entries(r) -> list:
    return json.loads(queue_cli(r, "list", "--json").stdout)


def delivered(up) -> dict:
    """Recipient -> number of copies the upstream accepted (250 after the dot)."""
    out: dict = {}
    for t in up.messages:
        if str(t.final_reply).startswith("250"):
            for a in t.rcpt_addrs:
                out[a.decode()] = out.get(a.decode(), 0) + 1
    return out


def dsns(up) -> list:
    return [t for t in up.messages if t.mail_from == b"" and str(t.final_reply).startswith("250")]


def test_second_copy_4xx_is_queued_then_delivered_once(queued):
    r = queued(upstream={"final_reply": ["250 2.0.0 first", "451 4.3.0 try later", "250 2.0.0 retried"]})
    code, text = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())
    assert code == 250 and b"queued" in text, (code, text)
    assert r.up.wait_for(lambda: len(r.up.messages) == 3, timeout=20), r.up.messages
    assert delivered(r.up) == {"bob@example.org": 1, "nokey@example.org": 1}
    first, failed, retried = r.up.messages
    assert failed.content == retried.content, "the queued copy is sent as it was sealed"
    assert b"The figures" in retried.content and b"The figures" not in first.content
    assert [p for p in retried.mail_params if p.startswith(b"SIZE")] == []
    assert r.up.wait_for(lambda: entries(r) == [], timeout=10)
    assert dsns(r.up) == []
    assert "later copies queued" in r.sg.stderr_text()


def test_fast_path_never_touches_the_queue(queued):
    r = queued()
    before = sorted(p.name for p in r.queue_dir.iterdir())
    code, text = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())
    assert (code, text) == (250, b"2.0.0 OK: 2 copies accepted")
    assert sorted(p.name for p in r.queue_dir.iterdir()) == before == [".lock"]


def test_expired_copy_is_returned_with_4_4_7(queued):
    r = queued(upstream={"final_reply": fail_nokey("451 4.2.2 mailbox full")}, queue={"max_age": 3})
    code, _ = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())
    assert code == 250
    assert r.up.wait_for(lambda: len(dsns(r.up)) == 1, timeout=20)
    _, _, _, [rc] = parse_dsn(dsns(r.up)[0])
    assert rc["Status"] == "4.4.7" and rc["Action"] == "failed"
    assert "451 4.2.2 mailbox full" in rc["Diagnostic-Code"]
    tries = [t for t in r.up.messages if t.rcpt_addrs == [b"nokey@example.org"]]
    assert len(tries) >= 2, "retried before it expired"
    assert r.up.wait_for(lambda: entries(r) == [], timeout=10)


def test_notify_delay_gets_one_delayed_dsn_then_the_failure(queued):
    r = queued(upstream={"final_reply": fail_nokey("451 4.2.2 mailbox full")},
               queue={"max_age": 4, "delay_warning": 1})
    code, _ = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(),
                   rcpt_opts={"nokey@example.org": ["NOTIFY=DELAY,FAILURE"]})
    assert code == 250
    assert r.up.wait_for(lambda: len(dsns(r.up)) == 2, timeout=20), dsns(r.up)
    delayed, failed = (parse_dsn(t) for t in dsns(r.up))
    assert delayed[0]["Subject"].startswith("Delayed Mail")
    [d] = delayed[3]
    assert d["Action"] == "delayed" and d["Status"] == "4.2.2" and d["Will-Retry-Until"]
    [f] = failed[3]
    assert f["Action"] == "failed" and f["Status"] == "4.4.7"
    assert r.up.wait_for(lambda: entries(r) == [], timeout=10)
    assert len(dsns(r.up)) == 2


def test_upstream_down_for_a_while_the_queue_waits_then_drains(queued):
    r = queued(upstream={"final_reply": fail_nokey("451 4.3.0 later")})
    for n in (1, 2, 3):
        assert send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(n))[0] == 250
    # The upstream goes away for the queue: every session is refused at the greeting.
    r.up.cfg["greeting"] = "421 4.3.2 going down"
    r.up.cfg["final_reply"] = "250 2.0.0 ok"
    assert r.up.wait_for(lambda: all(e["attempts"] >= 2 and "4.3.0" in (e["last_reply"] or "")
                                     and "greeting" in e["last_reply"] for e in entries(r)), timeout=15), entries(r)
    assert len(entries(r)) == 3 and dsns(r.up) == []
    r.up.cfg["greeting"] = None
    assert r.up.wait_for(lambda: entries(r) == [], timeout=15), entries(r)
    assert delivered(r.up) == {"bob@example.org": 3, "nokey@example.org": 3}


def test_encrypted_copy_is_queued_sealed_never_plaintext(queued):
    # nokey first (plain copy 1 accepted), bob's S/MIME copy fails and waits in the queue.
    r = queued(upstream={"final_reply": ["250", "451 4.3.0 try later"]}, queue={"retry_initial": 300, "retry_max": 600})
    code, _ = send(r.port, r.pki["ca"], ["nokey@example.org", "bob@example.org"], msg())
    assert code == 250
    [e] = entries(r)
    assert e["encrypted"] is True and e["recipients"][0]["path"]["address"] == "bob@example.org"
    content = (r.queue_dir / f"{e['id']}.msg").read_bytes()
    assert b"The figures" not in content and b"application/pkcs7-mime" in content
    assert oct((r.queue_dir / f"{e['id']}.msg").stat().st_mode & 0o777) == "0o600"


def parse_dsn(t):
    return parse_report(t.content)


def parse_report(content: bytes):
    """A DSN: (message, its parts, the per-message fields, the per-recipient fields)."""
    m = email.message_from_bytes(content, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    parts = list(m.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    # email parses message/delivery-status into a list of header blocks.
    blocks = parts[1].get_payload()
    return m, parts, blocks[0], blocks[1:]


def test_second_copy_5xx_gives_a_dsn_to_the_sender(queued):
    r = queued(upstream={"final_reply": ["250", "554 5.7.1 Content refused", "250"]})
    code, _ = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(),
                   mail_opts=["RET=HDRS", "ENVID=env+2B42"],
                   rcpt_opts={"nokey@example.org": ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;NoKey@example.org"]})
    assert code == 250
    assert r.up.wait_for(lambda: len(dsns(r.up)) == 1, timeout=20), r.up.messages
    [t] = dsns(r.up)
    assert t.rcpt_addrs == [b"alice@example.org"]
    m, parts, per_msg, per_rcpt = parse_dsn(t)
    assert per_msg["Original-Envelope-Id"] == "env+42"
    assert per_msg["Reporting-MTA"] == "dns; sealgate.test"
    [rc] = per_rcpt
    assert rc["Final-Recipient"] == "rfc822; nokey@example.org"
    assert rc["Original-Recipient"] == "rfc822; NoKey@example.org"
    assert rc["Action"] == "failed" and rc["Status"] == "5.7.1"
    assert "554 5.7.1 Content refused" in rc["Diagnostic-Code"]
    # RET=HDRS: the header section only.
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"Subject: figures 1" in t.content and b"The figures" not in t.content
    assert delivered(r.up) == {"bob@example.org": 1, "alice@example.org": 1}
    assert r.up.wait_for(lambda: entries(r) == [], timeout=10)


def test_dsn_of_an_encrypted_copy_never_holds_its_content(queued):
    r = queued(upstream={"final_reply": ["250", "554 5.7.1 refused", "250"]})
    code, _ = send(r.port, r.pki["ca"], ["nokey@example.org", "bob@example.org"], msg(), mail_opts=["RET=FULL"])
    assert code == 250
    assert r.up.wait_for(lambda: len(dsns(r.up)) == 1, timeout=20)
    [t] = dsns(r.up)
    _, parts, _, [rc] = parse_dsn(t)
    assert rc["Final-Recipient"] == "rfc822; bob@example.org"
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"The figures" not in t.content and b"MIIB" not in t.content and b"MII" not in t.content.split(b"text/rfc822-headers")[1]


def test_notify_never_and_null_sender_get_no_dsn(queued):
    r = queued(upstream={"final_reply": ["250", "554 5.7.1 refused", "250"]})
    code, _ = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(),
                   rcpt_opts={"nokey@example.org": ["NOTIFY=NEVER"]})
    assert code == 250
    assert r.up.wait_for(lambda: entries(r) == [], timeout=15)
    time.sleep(1.5)
    assert dsns(r.up) == []


def test_corrupt_entries_are_moved_aside_and_the_server_goes_on(queued):
    r = queued()
    bad = "00000000001-00000000000000aa"
    (r.queue_dir / f"{bad}.json").write_bytes(b'{"version": 1, "id": "0000')
    (r.queue_dir / f"{bad}.msg").write_bytes(b"whatever")
    assert r.up.wait_for(lambda: (r.queue_dir / "corrupt" / f"{bad}.json").exists(), timeout=10)
    assert (r.queue_dir / "corrupt" / f"{bad}.msg").exists()
    assert "corrupt queue entry moved aside" in r.sg.stderr_text()
    assert r.sg.alive()
    code, _ = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())
    assert code == 250


def test_unwritable_queue_gives_452_and_leaves_nothing(queued):
    r = queued(upstream={"final_reply": ["250", "451 4.3.0 later"]})
    shutil.rmtree(r.queue_dir / "corrupt", ignore_errors=True)
    for f in r.queue_dir.iterdir():
        f.unlink()
    r.queue_dir.rmdir()
    r.queue_dir.write_bytes(b"not a directory")  # every write into it fails
    code, text = send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())
    assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
    assert r.queue_dir.read_bytes() == b"not a directory"
    assert r.sg.alive()


def test_queue_cli_list_show_retry_bounce_remove(queued):
    r = queued(upstream={"final_reply": fail_nokey("451 4.3.0 later")}, queue={"retry_initial": 3600, "retry_max": 7200})
    for n in (1, 2, 3):
        assert send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(n))[0] == 250
    listed = entries(r)
    assert len(listed) == 3 and all(e["recipients"][0]["state"] == "pending" for e in listed)
    assert all(e["attempts"] == 1 and "451 4.3.0 later" in e["last_reply"] for e in listed)
    a, b, c = (e["id"] for e in listed)
    text = queue_cli(r, "list").stdout
    assert a in text and "nokey@example.org (waiting)" in text and "3 entries" in text
    assert json.loads(queue_cli(r, "show", a).stdout)["id"] == a
    assert queue_cli(r, "show", "../../etc/passwd", check=False).returncode == 1
    assert queue_cli(r, "retry", "0123-nope", check=False).returncode == 1

    # retry: due now; the running server picks it up at its next rescan.
    r.up.cfg["final_reply"] = "250 2.0.0 ok now"
    queue_cli(r, "retry", a)
    assert r.up.wait_for(lambda: [e["id"] for e in entries(r)] == [b, c], timeout=10), entries(r)
    # bounce: a DSN now, nothing delivered.
    queue_cli(r, "bounce", b)
    assert r.up.wait_for(lambda: len(dsns(r.up)) == 1, timeout=10)
    _, _, _, [rc] = parse_dsn(dsns(r.up)[0])
    assert rc["Final-Recipient"] == "rfc822; nokey@example.org" and rc["Action"] == "failed"
    # remove: gone, no DSN, never delivered.
    queue_cli(r, "remove", c)
    assert r.up.wait_for(lambda: entries(r) == [], timeout=10)
    time.sleep(1.5)
    assert len(dsns(r.up)) == 1
    assert delivered(r.up)["nokey@example.org"] == 1 + 0  # a only (b bounced, c removed)


def test_queue_cli_works_with_the_server_stopped(queued):
    r = queued(upstream={"final_reply": ["250", "451 4.3.0 later"]}, queue={"retry_initial": 3600, "retry_max": 7200})
    assert send(r.port, r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg())[0] == 250
    r.sg.stop()
    [e] = entries(r)
    if os.geteuid() == 0:
        # root on a queue that belongs to the service user: refused (files root wrote there
        # could not be read by the server); list still works.
        os.chown(r.queue_dir, 65534, 65534)
        try:
            p = queue_cli(r, "retry", "--all", check=False)
            assert p.returncode == 1 and "sudo -u" in p.stderr, p.stderr
            assert len(entries(r)) == 1
        finally:
            os.chown(r.queue_dir, 0, 0)
    queue_cli(r, "retry", "--all")
    assert entries(r)[0]["next_attempt"] == 0
    r.up.cfg["final_reply"] = "250"
    restarted = _restart(r)
    try:
        assert r.up.wait_for(lambda: entries(r) == [], timeout=10)
        assert delivered(r.up)["nokey@example.org"] == 1
    finally:
        restarted.stop()


def _restart(r, n=[0]) -> Sealgate:
    n[0] += 1
    wd = r.sg.workdir.parent / f"restart{n[0]}"
    wd.mkdir()
    cfg = dict(r.sg.config)
    cfg["queue"] = dict(cfg["queue"], dir=str(r.queue_dir))
    return Sealgate(cfg, wd)


# --------------------------------------------------------------------------- kill -9
# 300 by default (the hundreds the issue asks for): ~20 kills in ~40 s here; 100 gave only ~7
# kills (~17 s). KILL_MESSAGES=1000 for a longer run (~70 kills, ~75 s).
KILL_MESSAGES = int(os.environ.get("KILL_MESSAGES", "300"))


def test_kill_9_loses_nothing_that_got_250(queued, smime_pki):
    """Messages to bob (S/MIME) and nokey (plain); the plain copy's first try fails at random
    with 451 (so about half the messages go through the queue). sealgate is killed with SIGKILL
    at random instants and restarted. Afterwards every message that got 250 has reached both
    recipients. Duplicates are possible only in the at-least-once windows (a copy accepted
    upstream, the client's 250 or the queue's removal not yet done when the kill came)."""
    rnd = random.Random(10)
    seen: dict = {}

    def script(txn):
        key = (txn.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0], tuple(txn.rcpt_addrs))
        seen[key] = seen.get(key, 0) + 1
        if txn.rcpt_addrs == [b"nokey@example.org"] and seen[key] == 1 and rnd.random() < 0.5:
            return "451 4.3.0 not now"
        return "250 2.0.0 ok"

    r = queued(upstream={"final_reply": script})
    r.sg.stop()  # the fixture's instance ends normally; the ones killed here are ours
    cfg = dict(r.sg.config)
    cfg["queue"] = dict(cfg["queue"], dir=str(r.queue_dir))
    wd = r.sg.workdir.parent / "kill0"
    wd.mkdir()
    first = Sealgate(cfg, wd)
    state = {"sg": first, "port": first.port}
    acked: set = set()
    stop = threading.Event()

    def client():
        for n in range(KILL_MESSAGES):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    code, _ = send(state["port"], r.pki["ca"], ["bob@example.org", "nokey@example.org"], msg(n),
                                   timeout=10)
                    if code == 250:
                        acked.add(n)
                        break
                except (OSError, smtplib.SMTPException, AssertionError):
                    pass
                time.sleep(0.05)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    kills = 0
    restarts = [first]
    try:
        # Kills spread over the whole run (about one every 7 messages), not only its start.
        while t.is_alive() and kills < max(15, KILL_MESSAGES // 7):
            time.sleep(rnd.uniform(0.3, 1.5))
            state["sg"].proc.send_signal(signal.SIGKILL)
            state["sg"].proc.wait(10)
            kills += 1
            wd = r.sg.workdir.parent / f"kill{kills}"
            wd.mkdir()
            sg = Sealgate(cfg, wd)
            restarts.append(sg)
            state.update(sg=sg, port=sg.port)
        # After the last kill the client sends what is left (about 0.2 s a message here).
        t.join(max(120, KILL_MESSAGES))
        assert not t.is_alive(), "client did not finish"
        assert r.up.wait_for(lambda: entries(r) == [], timeout=max(60, KILL_MESSAGES // 2), interval=0.5), entries(r)
    finally:
        stop.set()
        for sg in restarts:
            sg.stop()
    got = delivered(r.up)
    per_msg: dict = {}
    for tx in r.up.messages:
        if str(tx.final_reply).startswith("250"):
            subject = tx.content.split(b"Subject: figures ", 1)[1].split(b"\r\n", 1)[0]
            for a in tx.rcpt_addrs:
                per_msg.setdefault(int(subject), []).append(a.decode())
    missing = [(n, rc) for n in sorted(acked) for rc in ("bob@example.org", "nokey@example.org")
               if rc not in per_msg.get(n, [])]
    dupes = sum(len(v) - len(set(v)) for v in per_msg.values())
    print(f"kill -9: {kills} kills, {len(acked)}/{KILL_MESSAGES} acknowledged, {got}, duplicates {dupes}")
    assert kills >= 3
    assert len(acked) == KILL_MESSAGES
    assert missing == [], missing
    # Each kill opens at most a few at-least-once windows (the client's session and each
    # queue delivery in flight).
    assert dupes <= kills * 6, dupes
    for sg in restarts:
        assert "panicked" not in sg.stderr_text()
