"""Shared fixtures for sealgate's black-box tests.

- pki:               throwaway test PKI (openssl CLI), see support/pki.py
- upstream_factory:  start scriptable upstream SMTP servers (support/upstream.py)
- upstream:          one default upstream (STARTTLS, cert for localhost signed by the test CA)
- sealgate_factory:  write a sealgate config (with overrides) and launch the binary
- relay:             upstream + sealgate wired together with the defaults

Environment:
  SEALGATE_BIN       path of the binary (default /work/main/target/debug/sealgate,
                     i.e. <repo>/target/debug/sealgate)
  SEALGATE_LOG       RUST_LOG value given to sealgate (default "debug")
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.clients import RawSMTP, smtplib_send, swaks, swaks_available  # noqa: E402,F401
from support.pki import make_pki  # noqa: E402
from support.upstream import Upstream  # noqa: E402
from support import REPO  # noqa: E402

SEALGATE_BIN = os.path.abspath(os.environ.get("SEALGATE_BIN", str(REPO / "target" / "debug" / "sealgate")))
LISTEN_RE_PREFIX = "sealgate: listening on "


# --------------------------------------------------------------------------- reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for proc in getattr(item, "_sealgate_procs", []):
            rep.sections.append((f"sealgate stderr ({proc.config_path})", proc.stderr_text()[-20000:]))
        for up in getattr(item, "_upstreams", []):
            rep.sections.append((f"upstream 127.0.0.1:{up.port} record", _summarise_upstream(up)))


def _summarise_upstream(up: Upstream) -> str:
    out = []
    for s in up.sessions:
        out.append(f"session {s.id}: tls={s.tls_version} tls_error={s.tls_error} closed={s.close_reason!r}")
        out.append(f"  pre-TLS raw:  {bytes(s.raw_pre_tls)[:2000]!r}")
        out.append(f"  post-TLS raw: {bytes(s.raw_post_tls)[:2000]!r}")
        if s.violations:
            out.append(f"  violations: {s.violations}")
    return "\n".join(out) or "(no sessions)"


# --------------------------------------------------------------------------- PKI
@pytest.fixture(scope="session")
def pki():
    # not under pytest's 0700 tmp dir: other users (postfix) must be able to read the certs
    d = tempfile.mkdtemp(prefix="sealgate-pki-")
    os.chmod(d, 0o755)
    try:
        yield make_pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- upstream
@pytest.fixture
def upstream_factory(pki, request):
    started: list[Upstream] = []
    request.node._upstreams = started

    def make(**script: Any) -> Upstream:
        script.setdefault("cert", pki["server"])
        script.setdefault("key", pki["server_key"])
        script.setdefault("idle_timeout", 30)
        up = Upstream(script).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()
    for up in started:
        assert not up.errors, f"upstream harness internal errors: {up.errors}"


@pytest.fixture
def upstream(upstream_factory):
    return upstream_factory()


# --------------------------------------------------------------------------- sealgate
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_toml(cfg: dict) -> str:
    out = []
    for section, body in cfg.items():
        if isinstance(body, list):  # array of tables
            for tbl in body:
                out.append(f"[[{section}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in tbl.items() if v is not None]
                out.append("")
        else:
            out.append(f"[{section}]")
            nested = [(k, v) for k, v in body.items()
                      if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            out += [f"{k} = {_toml_value(v)}" for k, v in body.items()
                    if v is not None and (k, v) not in nested]
            out.append("")
            for k, tables in nested:  # [[section.k]] arrays of tables
                for tbl in tables:
                    out.append(f"[[{section}.{k}]]")
                    out += [f"{kk} = {_toml_value(vv)}" for kk, vv in tbl.items() if vv is not None]
                    out.append("")
    return "\n".join(out)


DEFAULT_LIMITS = {
    "max_message_size": 52428800,
    "max_recipients": 1000,
    "max_connections": 1000,
    "max_command_line": 512,
    "command_timeout": 10,
    "data_timeout": 10,
    "upstream_timeout": 5,
    "connect_timeout": 3,
}


def build_config(workdir: Path, pki: dict, upstream_addr: str, *, listen: Optional[list] = None,
                 upstream_cfg: Optional[dict] = None, limits: Optional[dict] = None,
                 server: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """The config dict sealgate will get. Overrides are merged into each section
    (listen: one dict per listener; upstream_cfg: the [upstream] section)."""
    lst = listen if listen is not None else [{}]
    listeners = []
    for l in lst:
        d = {"address": "127.0.0.1:0", "tls": "starttls", "cert": pki["server"],
             "key": pki["server_key"], "require_tls": False}
        d.update(l)
        if d.get("sign_without_auth") and "allow_from" not in d:
            d["allow_from"] = ["127.0.0.1"]  # check-config requires it
        if d.get("tls") == "none":
            d.setdefault("cert", None)
        listeners.append(d)
    # The scripted upstream offers no XCLIENT unless a test asks: tests of client identity
    # set forward_client themselves (None: the default, xclient).
    up = {"address": upstream_addr, "tls": "starttls", "ca_file": pki["ca"], "server_name": "localhost",
          "forward_client": "none"}
    up.update(upstream_cfg or {})
    lim = dict(DEFAULT_LIMITS)
    lim.update(limits or {})
    srv = {"hostname": "sealgate.test"}
    srv.update(server or {})
    cfg = {"server": srv, "store": {"path": str(workdir / "store")}, "listen": listeners,
           "upstream": up, "limits": lim}
    for k, v in (extra or {}).items():
        cfg[k] = v
    return cfg


class Sealgate:
    def __init__(self, config: dict, workdir: Path, env: Optional[dict] = None, start_timeout: float = 20.0):
        self.config = config
        self.workdir = workdir
        self.config_path = workdir / "sealgate.toml"
        self.config_path.write_text(to_toml(config))
        self.stderr_path = workdir / "sealgate.stderr"
        self.stdout_lines: list[str] = []
        self.ports: list[int] = []
        e = dict(os.environ)
        e.setdefault("RUST_LOG", os.environ.get("SEALGATE_LOG", "debug"))
        e["RUST_BACKTRACE"] = "1"
        e.update(env or {})
        self._stderr_f = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([SEALGATE_BIN, "serve", "--config", str(self.config_path)],
                                     stdout=subprocess.PIPE, stderr=self._stderr_f, cwd=workdir, env=e)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        n = len(config["listen"])
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if len(self.ports) >= n:
                break
            if self.proc.poll() is not None:
                self._reader.join(1)
                raise RuntimeError(f"sealgate exited with {self.proc.returncode} before listening:\n"
                                   f"stdout: {self.stdout_lines}\nstderr:\n{self.stderr_text()}")
            time.sleep(0.02)
        else:
            self.stop()
            raise RuntimeError(f"sealgate did not print {n} 'listening on' line(s) in {start_timeout}s:\n"
                               f"stdout: {self.stdout_lines}\nstderr:\n{self.stderr_text()}")

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            if line.startswith(LISTEN_RE_PREFIX):
                addr = line[len(LISTEN_RE_PREFIX):].split()[0]
                self.ports.append(int(addr.rsplit(":", 1)[1]))

    @property
    def port(self) -> int:
        return self.ports[0]

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr_f.close()
        return self.proc.returncode


def sealgate_available() -> bool:
    return os.path.isfile(SEALGATE_BIN) and os.access(SEALGATE_BIN, os.X_OK)


@pytest.fixture
def sealgate_factory(pki, request, tmp_path):
    if not sealgate_available():
        pytest.skip(f"sealgate binary not found at {SEALGATE_BIN} (set SEALGATE_BIN or run cargo build)")
    procs: list[Sealgate] = []
    request.node._sealgate_procs = procs
    counter = [0]

    def start(upstream_addr: str, *, env: Optional[dict] = None, **overrides: Any) -> Sealgate:
        counter[0] += 1
        wd = tmp_path / f"sealgate{counter[0]}"
        wd.mkdir()
        cfg = build_config(wd, pki, upstream_addr, **overrides)
        sg = Sealgate(cfg, wd, env=env)
        procs.append(sg)
        return sg

    yield start
    crashed = []
    for sg in procs:
        if sg.proc.poll() is not None and sg.proc.returncode not in (0, -signal.SIGTERM):
            crashed.append((sg.config_path, sg.proc.returncode))
        sg.stop()
    for sg in procs:
        if "panicked" in sg.stderr_text():
            crashed.append((sg.config_path, "panic in stderr"))
    assert not crashed, f"sealgate died or panicked during the test: {crashed}"


class Relay:
    """A started upstream + sealgate pair with helpers."""

    def __init__(self, up: Upstream, sg: Sealgate, pki: dict):
        self.up, self.sg, self.pki = up, sg, pki

    @property
    def port(self) -> int:
        return self.sg.port

    def client(self, timeout: float = 10.0, implicit_tls: bool = False) -> RawSMTP:
        return RawSMTP("127.0.0.1", self.sg.port, timeout=timeout, ca_file=self.pki["ca"],
                       implicit_tls=implicit_tls, server_hostname="localhost")

    def session(self, tls: bool = True, timeout: float = 10.0) -> RawSMTP:
        c = self.client(timeout)
        c.start(tls=tls)
        return c

    def send(self, sender: str, rcpts: list, msg: bytes, **kw: Any) -> dict:
        return smtplib_send(self.sg.port, self.pki["ca"], sender, rcpts, msg, **kw)

    def swaks(self, *args: str, tls: bool = True, timeout: int = 20):
        return swaks(self.sg.port, self.pki["ca"], *args, tls=tls, timeout=timeout)


@pytest.fixture
def relay_factory(upstream_factory, sealgate_factory, pki):
    def make(upstream: Optional[dict] = None, **sealgate_overrides: Any) -> Relay:
        up = upstream_factory(**(upstream or {}))
        sg = sealgate_factory(up.address, **sealgate_overrides)
        return Relay(up, sg, pki)
    return make


@pytest.fixture
def relay(relay_factory) -> Relay:
    return relay_factory()
