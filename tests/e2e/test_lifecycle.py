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
from support import REPO
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


class DemoProcess:
    """`sealgate demo` started the way a newcomer does (default keys, another directory),
    its stdout read line by line in the background."""

    def __init__(self, cwd: Path, demo: Path):
        import threading
        self.proc = subprocess.Popen([SEALGATE_BIN, "demo", "--dir", str(demo), "--listen", "127.0.0.1:0",
                                      "--sink", "127.0.0.1:0"], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = int(self.wait_for(r"^sealgate: listening on 127\.0\.0\.1:(\d+) \(tls=starttls\)$").group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not printed; got:\n" + "\n".join(self.lines))

    def command_after(self, pattern: str) -> str:
        """The indented command line printed right after the line matching `pattern`."""
        self.wait_for(pattern)
        for i, line in enumerate(self.lines):
            if re.search(pattern, line):
                assert self.lines[i + 1].startswith("  "), self.lines[i:i + 2]
                return self.lines[i + 1].strip()
        raise AssertionError(pattern)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0


def test_demo_prints_commands_that_work_when_copied(tmp_path):
    """Issue 16: every command the demo prints works as printed, from any directory: the
    sends, and for each message that arrives the command that opens it."""
    demo = tmp_path / "demo"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    d = DemoProcess(elsewhere, demo)
    try:
        sends = [l.strip() for l in d.lines if l.strip().startswith("swaks ")]
        assert len(sends) == 2, d.lines
        for cmd in sends:
            res = subprocess.run(cmd + " --body 'demo body line'", shell=True, cwd=elsewhere,
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stdout + res.stderr
        # 1: plain to bob@example.net; 2 and 3: S/MIME for alice@, PGP/MIME for alice2@.
        plain = d.command_after(r"^sealgate demo: 1\.eml: plain")
        assert plain == f"cat {demo / 'mail' / '1.eml'}"
        opened = []
        for n in (2, 3):
            cmd = d.command_after(rf"^sealgate demo: {n}\.eml: ")
            res = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, timeout=60)
            assert res.returncode == 0, (cmd, res.stderr.decode(errors="replace"))
            assert b"demo body line" in res.stdout, (cmd, res.stdout[-500:])
            opened.append(cmd.split()[0])
        assert sorted(opened) == ["GNUPGHOME=$(mktemp", "openssl"], opened
        assert (demo / "sealgate.toml").exists()
        assert "MAIL FROM:<alice@example.org>" in (demo / "mail" / "1.envelope").read_text()
    finally:
        d.stop()
    # A second run starts its numbering at 1 again.
    d = DemoProcess(tmp_path, demo)
    try:
        assert not (demo / "mail" / "2.eml").exists()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
            s.starttls(context=client_ssl_context(str(demo / "tls" / "ca.pem")))
            s.sendmail("alice@example.org", ["bob@example.net"], MSG)
        d.wait_for(r"^sealgate demo: 1\.eml: plain")
        assert (demo / "mail" / "1.eml").read_bytes() == MSG
    finally:
        d.stop()



def test_readme_key_commands_work_as_written(tmp_path):
    """Issue 16: README's key-management block runs as written (from a directory laid out like
    the repository root) against the demo's store, while the demo runs."""
    repo = REPO
    text = (repo / "README.md").read_text()
    section = text[text.index("## The key store"):]
    block = section[section.index("```sh\n") + 6:section.index("```\n", section.index("```sh\n") + 6)]
    commands = [l.split("  #")[0].strip() for l in block.splitlines() if l.strip()]
    assert len(commands) >= 6 and all(c.startswith("sealgate keys ") for c in commands), commands
    (tmp_path / "keys").symlink_to(repo / "keys")
    d = DemoProcess(tmp_path, tmp_path / "sealgate-demo")
    env = dict(os.environ, PATH=f"{Path(SEALGATE_BIN).parent}:{os.environ['PATH']}")
    try:
        outputs = []
        for cmd in commands:
            res = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)
            assert res.returncode == 0, (cmd, res.stdout, res.stderr)
            outputs.append(res.stdout)
        shown = outputs[[i for i, c in enumerate(commands) if " show " in c][0]]
        assert "expired" in shown, shown
        assert (tmp_path / "peggy.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        assert "removed x509:bebf05ef335e8" in outputs[-1]
    finally:
        d.stop()


def test_readme_postfix_recipes_are_the_tested_files():
    """The README's main.cf/master.cf (and sasl/smtpd.conf) blocks are the lines of
    deploy/postfix/*/ (the files tests/e2e/test_postfix_recipes.py runs), in order."""
    repo = REPO
    readme = (repo / "README.md").read_text()
    for recipe in ("edge", "before-queue", "after-queue"):
        for name in ("main.cf", "master.cf", "sasl/smtpd.conf"):
            if not (repo / "deploy" / "postfix" / recipe / name).exists():
                continue
            lines = [l for l in (repo / "deploy" / "postfix" / recipe / name).read_text().splitlines()
                     if l.strip() and not l.lstrip().startswith("#")]
            block = f"# {name}\n" + "\n".join(lines) + "\n"
            assert block in readme, f"README lacks deploy/postfix/{recipe}/{name} as tested:\n{block}"
