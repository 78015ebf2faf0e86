"""The Debian package, end to end, on this machine (CI runs it as root).

Builds the .deb with cargo-deb (installed with `cargo install cargo-deb --locked` when missing),
installs it with `dpkg -i`, checks what it put where and with which owners, scores the unit with
`systemd-analyze security --offline=yes`, runs `sealgate check-config` as the service user,
imports a key as the service user, starts `serve` as that user (no systemd: the binary directly,
with a test configuration in front of the scripted STARTTLS upstream of tests/e2e/support), sends one
message through it and decrypts what arrived, stops it, and purges the package.

Nothing is skipped: without root, or when a prerequisite cannot be installed, the tests fail and
say why. The package must not be installed before the test (it would be purged at the end).
Every wait is bounded. The user and group `sealgate` stay after the purge (see
deploy/debian/postrm).

Environment: SEALGATE_DEB_PROFILE (default "release", what ships) is the Cargo profile the
package is built with.
"""
from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import tempfile
import time
from email import message_from_bytes
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import to_toml  # noqa: E402
from support.clients import smtplib_send  # noqa: E402
from support.crypto import cms_decrypt  # noqa: E402
from support import REPO  # noqa: E402

BIN = "/usr/bin/sealgate"
CONF = "/etc/sealgate/sealgate.toml"
UNIT = "/usr/lib/systemd/system/sealgate.service"
STATE = "/var/lib/sealgate"
LOCK = "/run/lock/sealgate-package-test.lock"
APT_NEEDS = {  # command -> Debian package providing it
    "systemd-analyze": "systemd",
    "dpkg-shlibdeps": "dpkg-dev",      # cargo-deb's $auto dependencies
    "adduser": "adduser",              # the package's postinst
    "runuser": "util-linux",
    "openssl": "openssl",              # opens what arrived
    "strace": "strace",                # what the server does, against the unit's filters
}


def run(args: list, timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(map(str, args))}: no result within {timeout} s\n{e.stdout}\n{e.stderr}")
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def as_service(*args: str, timeout: float = 60, user: str = "sealgate") -> subprocess.CompletedProcess:
    return run(["runuser", "-u", user, "--", *args], timeout=timeout, check=False)


def cargo() -> str:
    found = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.access(found, os.X_OK):
        pytest.fail("cargo not found (install Rust with rustup, see README 'Prerequisites')")
    return found


def ensure_prerequisites() -> None:
    missing = sorted({pkg for cmd, pkg in APT_NEEDS.items() if shutil.which(cmd) is None})
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        p = run(["apt-get", "install", "-y", "-q", *missing], timeout=900, env=env, check=False)
        still = [c for c in APT_NEEDS if shutil.which(c) is None]
        if p.returncode != 0 or still:
            pytest.fail(f"cannot install {missing} (still missing: {still}):\n{p.stdout}\n{p.stderr}")
    if run([cargo(), "deb", "--version"], timeout=60, check=False).returncode != 0:
        p = run([cargo(), "install", "cargo-deb", "--locked"], timeout=2400, check=False)
        if p.returncode != 0 or run([cargo(), "deb", "--version"], timeout=60, check=False).returncode:
            pytest.fail(f"cannot install cargo-deb (cargo install cargo-deb --locked):\n{p.stderr[-5000:]}")


def package_status() -> str:
    p = run(["dpkg-query", "-W", "-f=${Status}", "sealgate"], timeout=60, check=False)
    return p.stdout.strip() if p.returncode == 0 else "not-installed"


def purge() -> subprocess.CompletedProcess:
    return run(["dpkg", "--purge", "sealgate"], timeout=300, check=False)


def unit_settings(path) -> dict:
    """Directive -> list of values (in order) of a unit file."""
    out: dict = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def syscall_set(groups: list) -> set:
    """The system calls in these systemd syscall groups and names (expanded recursively)."""
    names: set = set()
    for g in groups:
        if not g.startswith("@"):
            names.add(g)
            continue
        out = run(["systemd-analyze", "syscall-filter", "--no-pager", g], timeout=60).stdout
        members = [l.split()[0] for l in out.splitlines()[1:]
                   if l.strip() and not l.strip().startswith("#")]
        names |= syscall_set(members)
    return names


def test_unit_keeps_what_the_service_needs():
    """The hardening leaves what sealgate must do: bind port 25 as sealgate, read /etc/sealgate,
    write the store and spool named in the template, reach the network and a Unix socket under
    /run/sealgate, restart on failure."""
    u = unit_settings(REPO / "deploy/sealgate.service")
    template = (REPO / "deploy/sealgate.toml").read_text()
    assert u["User"] == ["sealgate"] and u["Group"] == ["sealgate"]
    assert u["ExecStart"] == [f"{BIN} serve --config {CONF}"]
    assert u["ExecStartPre"] == [f"{BIN} check-config --config {CONF}"]
    assert u["Restart"] == ["on-failure"]
    assert u["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert u["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert "PrivateUsers" not in u, "a user namespace takes CAP_NET_BIND_SERVICE away"
    families = set(" ".join(u["RestrictAddressFamilies"]).split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    assert "PrivateNetwork" not in u and "IPAddressDeny" not in u
    # Writable: StateDirectory= (under /var/lib) and RuntimeDirectory= (under /run).
    state = {f"/var/lib/{d}" for v in u["StateDirectory"] for d in v.split()}
    assert {"/var/lib/sealgate", "/var/lib/sealgate/spool"} <= state
    assert 'path = "/var/lib/sealgate/store"' in template
    assert 'spool_dir = "/var/lib/sealgate/spool"' in template
    assert u["RuntimeDirectory"] == ["sealgate"]
    # /etc stays readable: nothing hides it.
    for k in ("InaccessiblePaths", "TemporaryFileSystem"):
        assert not any("/etc" in v for v in u.get(k, [])), u[k]


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """Builds the package, installs it, yields the .deb path; purges it afterwards whatever
    happened (the last test checks the purge itself)."""
    if os.geteuid() != 0:
        pytest.fail("the package test installs a .deb with dpkg: run it as root")
    # One package test at a time on this machine (dpkg is machine-wide).
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 1800
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another package test holds {LOCK} for more than 30 min")
            time.sleep(2)
    try:
        status = package_status()
        if "installed" in status and "not-installed" not in status:
            pytest.fail(f"a sealgate package is already on this machine ({status!r}); the test "
                        "would purge it. Remove it first: dpkg --purge sealgate")
        ensure_prerequisites()
        out = tmp_path_factory.mktemp("deb")
        profile = os.environ.get("SEALGATE_DEB_PROFILE", "release")
        run([cargo(), "deb", "--locked", "--profile", profile, "--output", str(out)],
            timeout=3600, cwd=REPO)
        debs = sorted(out.glob("sealgate_*.deb"))
        assert len(debs) == 1, f"cargo deb made {debs}"
        run(["dpkg", "-i", str(debs[0])], timeout=300)
        assert package_status() == "install ok installed"
        yield debs[0]
    finally:
        if package_status() != "not-installed":
            purge()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def owner(path: str) -> tuple:
    st = os.stat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, oct(stat.S_IMODE(st.st_mode))


def test_package_installs_binary_unit_config_user_and_directories(deb):
    assert owner(BIN) == ("root", "root", "0o755")
    assert run([BIN, "--version"], timeout=30).stdout.startswith("sealgate ")
    # The configuration: a commented conffile the service (group sealgate) may read.
    assert owner("/etc/sealgate") == ("root", "sealgate", "0o750")
    assert owner(CONF) == ("root", "sealgate", "0o640")
    assert Path(CONF).read_bytes() == (REPO / "deploy/sealgate.toml").read_bytes()
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "sealgate"], timeout=30).stdout
    assert CONF in conffiles, conffiles
    # The unit installed is the one in deploy/ (which names /usr/bin/sealgate).
    assert Path(UNIT).read_bytes() == (REPO / "deploy/sealgate.service").read_bytes()
    assert f"ExecStart={BIN} serve --config {CONF}" in Path(UNIT).read_text()
    # A system user without a login shell, its state directory and spool.
    u = pwd.getpwnam("sealgate")
    assert u.pw_uid < 1000 and u.pw_dir == STATE and u.pw_shell == "/usr/sbin/nologin"
    assert grp.getgrgid(u.pw_gid).gr_name == "sealgate"
    assert owner(STATE) == ("sealgate", "sealgate", "0o700")
    assert owner(f"{STATE}/spool") == ("sealgate", "sealgate", "0o700")
    # Installed, not enabled: the configuration must be edited first.
    assert not Path("/etc/systemd/system/multi-user.target.wants/sealgate.service").exists()


def test_unit_exposure_score_is_ok(deb):
    scores = {}
    for unit in (UNIT, str(REPO / "deploy/sealgate.service")):
        p = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit], timeout=120)
        m = re.search(r"Overall exposure level for sealgate\.service: ([0-9.]+) (\w+)", p.stdout)
        assert m, p.stdout
        scores[unit] = (float(m.group(1)), m.group(2))
    assert all(s <= 2.5 and v == "OK" for s, v in scores.values()), scores


def test_check_config_reads_the_installed_configuration_as_the_service_user(deb):
    # The service user reads the installed template: what it reports is the placeholder TLS
    # certificate not installed yet, not the file itself. A user outside the group cannot.
    p = as_service(BIN, "check-config", "--config", CONF)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.splitlines() == [
        f"{CONF}: listen[0].cert/key: /etc/sealgate/tls/server.pem: No such file or directory (os error 2)"
    ], p.stderr
    p = as_service(BIN, "check-config", "--config", CONF, user="nobody")
    assert p.returncode == 2 and "Permission denied" in p.stderr, (p.returncode, p.stderr)


@pytest.fixture(scope="module")
def workdir(deb):
    """A configuration for the packaged store, readable by the service user."""
    d = Path(tempfile.mkdtemp(prefix="sealgate-pkg-"))
    os.chmod(d, 0o755)
    shutil.copy(REPO / "keys/demo/alice-smime.pem", d / "alice-smime.pem")
    os.chmod(d / "alice-smime.pem", 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_config(workdir: Path, pki: dict, upstream: str) -> Path:
    cfg = {
        "server": {"hostname": "sealgate.test", "spool_dir": f"{STATE}/spool"},
        "store": {"path": f"{STATE}/store"},
        "listen": [{"address": "127.0.0.1:0", "tls": "starttls", "cert": pki["server"],
                    "key": pki["server_key"]}],
        "upstream": {"address": upstream, "tls": "starttls", "ca_file": pki["ca"],
                     "server_name": "localhost"},
        "limits": {"command_timeout": 10, "data_timeout": 10, "upstream_timeout": 10,
                   "connect_timeout": 5, "shutdown_grace": 5,
                   "memory_spool": 1024},  # so the message goes through the spool directory
        "policy": {"encrypt": "opportunistic", "sign": False},
    }
    path = workdir / "sealgate.toml"
    path.write_text(to_toml(cfg))
    os.chmod(path, 0o644)
    return path


def test_root_is_sent_to_the_service_user_for_key_commands(deb, workdir, pki):
    cfg = write_config(workdir, pki, "127.0.0.1:9")
    p = run([BIN, "keys", "import", "--config", str(cfg), str(workdir / "alice-smime.pem")],
            timeout=60, check=False)
    assert p.returncode == 1, p.stderr
    assert "sudo -u sealgate sealgate keys" in p.stderr, p.stderr
    assert not Path(f"{STATE}/store").exists(), "root created the store"


def test_serve_as_the_service_user_relays_a_message(deb, workdir, pki, upstream_factory):
    # The configuration keeps the default forward_client ("xclient"): the upstream offers it.
    up = upstream_factory(xclient=["NAME", "ADDR", "PROTO", "HELO", "PORT", "LOGIN", "DESTADDR", "DESTPORT"])
    cfg = write_config(workdir, pki, up.address)
    p = as_service(BIN, "check-config", "--config", str(cfg))
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr
    p = as_service(BIN, "keys", "import", "--config", str(cfg), str(workdir / "alice-smime.pem"))
    assert p.returncode == 0 and "1 added" in p.stdout, p.stderr
    for f in Path(f"{STATE}/store").iterdir():
        assert f.stat().st_uid == pwd.getpwnam("sealgate").pw_uid, f

    # serve runs under strace (as sealgate, tracing only sealgate), so that what it really does
    # can be held against the unit's filters, which cannot be applied here without systemd.
    trace = workdir / "serve.strace"
    trace.touch()
    shutil.chown(trace, "sealgate", "sealgate")
    stderr = open(workdir / "serve.stderr", "wb")
    proc = subprocess.Popen(["runuser", "-u", "sealgate", "--", "strace", "-f", "-qq",
                             "-o", str(trace), BIN, "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
                            env=dict(os.environ, RUST_LOG="info"))
    server_pid = None
    try:
        port = None
        deadline = time.monotonic() + 30
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            buf += proc.stdout.read() or b""
            m = re.search(rb"sealgate: listening on 127\.0\.0\.1:(\d+) \(tls=starttls\)", buf)
            if m:
                port = int(m.group(1))
            time.sleep(0.05)
        assert port, f"no listening line in 30 s: {buf!r}\n{(workdir / 'serve.stderr').read_text()}"
        # The server runs as the service user (runuser -> strace -> sealgate).
        def child(pid: int) -> int:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert len(children) == 1, children
            return int(children[0])
        server_pid = child(child(proc.pid))
        assert Path(f"/proc/{server_pid}/exe").resolve() == Path(BIN)
        uids = [l for l in Path(f"/proc/{server_pid}/status").read_text().splitlines()
                if l.startswith("Uid:")]
        assert uids[0].split()[1:] == [str(pwd.getpwnam("sealgate").pw_uid)] * 4, uids

        msg = (b"From: alice@example.test\r\nTo: alice@example.test\r\n"
               b"Subject: through the package\r\n\r\npackaged and sealed\r\n"
               + b"more than memory_spool\r\n" * 100)
        try:
            refused = smtplib_send(port, pki["ca"], "alice@example.test", ["alice@example.test"],
                                   msg, timeout=20)
        except smtplib.SMTPException as e:
            pytest.fail(f"{e}\n{(workdir / 'serve.stderr').read_text()}")
        assert refused == {}
        assert up.wait_for(lambda: len(up.messages) == 1, timeout=10), up.to_json()
        got = up.messages[0].content
        assert message_from_bytes(got).get_content_type() == "application/pkcs7-mime"
        assert b"packaged and sealed" not in got
        plain = cms_decrypt(got, str(REPO / "keys/demo/alice-smime.pem"),
                            str(REPO / "keys/demo/alice-smime.key"))
        assert b"packaged and sealed" in plain
    finally:
        # SIGTERM to sealgate itself (runuser would pass it on, then SIGKILL after 2 s);
        # strace and runuser exit with sealgate's status.
        if proc.poll() is None:
            if server_pid:
                os.kill(server_pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            code = "killed"
        stderr.close()
    assert code == 0, f"serve ended with {code}:\n{(workdir / 'serve.stderr').read_text()}"

    # What the server did, against what the unit allows.
    calls = [l.split(None, 1)[1] for l in trace.read_text().splitlines() if " " in l]
    used = {m.group(1) for c in calls if (m := re.match(r"([a-z0-9_]+)\(", c))}
    assert {"bind", "accept4", "connect", "sendto", "openat"} <= used, used  # a real trace
    u = unit_settings(UNIT)
    allowed, denied = set(), set()
    for v in u["SystemCallFilter"]:
        if v.startswith("~"):
            denied |= syscall_set(v[1:].split())
        else:
            allowed |= syscall_set(v.split())
    assert not used - allowed, f"system calls outside SystemCallFilter: {used - allowed}"
    assert not used & denied, f"system calls the unit denies: {used & denied}"
    families = set(" ".join(u["RestrictAddressFamilies"]).split())
    opened = {m.group(1) for c in calls if (m := re.match(r"socket\((AF_[A-Z0-9]+)", c))}
    assert opened and opened <= families, (opened, families)
    if u.get("MemoryDenyWriteExecute") == ["true"]:
        wx = [c for c in calls if re.match(r"(mprotect|pkey_mprotect)\(.*PROT_EXEC", c)
              or re.match(r"mmap\(.*PROT_WRITE\|PROT_EXEC", c)]
        assert not wx, wx
    # The spool directory was used (an unnamed temporary file in it) and is writable.
    assert any(f"{STATE}/spool" in c and "O_TMPFILE" in c and not re.search(r"= -1 E", c)
               for c in calls), "the message never went through the spool directory"


def test_purge_removes_the_package_and_its_data(deb):
    files = run(["dpkg", "-L", "sealgate"], timeout=60).stdout.split()
    ours = [f for f in files if "sealgate" in f]
    assert BIN in ours and CONF in ours and UNIT in ours, ours
    p = purge()
    assert p.returncode == 0, p.stdout + p.stderr
    assert package_status() == "not-installed" or "not-installed" in package_status()
    left = [f for f in ours + [STATE, "/run/sealgate", "/etc/sealgate"] if os.path.lexists(f)]
    assert left == [], f"left after purge: {left}"
    overrides = run(["dpkg-statoverride", "--list"], timeout=30).stdout
    assert "sealgate" not in overrides, overrides
    # Kept on purpose, as Debian does for system users (deploy/debian/postrm).
    assert pwd.getpwnam("sealgate").pw_dir == STATE
