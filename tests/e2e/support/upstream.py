#!/usr/bin/env python3
"""Scriptable, TLS-capable SMTP server used as sealgate's upstream in tests.

Hand-written on top of socket/ssl/threading so that every byte is under the
test's control and every byte received is recorded.  No smtpd/aiosmtpd.

In-process use (pytest)::

    up = Upstream({"tls": "starttls", "cert": ..., "key": ..., "final_reply": 451})
    up.start()
    ... up.port, up.transactions, up.raw, up.sessions ...
    up.stop()

Standalone::

    python3 tests/e2e/support/upstream.py --config script.json [--record out.json]
    -> prints "upstream: listening on 127.0.0.1:PORT", runs until SIGINT/SIGTERM,
       then (with --record) writes everything it saw as JSON.

Script keys (all optional; see DEFAULTS):

  host, port                 listen address (port 0 = ephemeral)
  hostname                   name in greeting/EHLO
  tls                        "starttls" | "implicit" | "none"
  cert, key                  PEM files (required unless tls == "none")
  tls_min_version,
  tls_max_version            "1.0" | "1.1" | "1.2" | "1.3" (restrict the server side)
  advertise_starttls         default: tls == "starttls"; false = EHLO without STARTTLS
  starttls_reply             reply to STARTTLS (default "220 2.0.0 Ready to start TLS");
                             anything not starting with 220 = refusal, no TLS switch
                             ("421 ..." also closes the connection)
  starttls_inject            text (str, \\r\\n escapes allowed) appended to the 220 in
                             the SAME write, before the TLS handshake
  greeting                   full greeting reply (default "220 <hostname> ESMTP upstream")
  ehlo_extensions            list of extra EHLO keywords (raw), appended
  size                       SIZE value to advertise (int), null = no SIZE
  smtputf8, dsn, chunking,
  pipelining, eightbitmime   booleans: advertise these extensions
  auth                       {"user": "...", "password": "..."} -> advertise AUTH PLAIN LOGIN
                             (only after TLS unless auth_before_tls) and answer 235/535
  auth_before_tls            advertise/accept AUTH before TLS too
  require_tls                530 5.7.0 to MAIL before TLS (default false: we *record* misuse)
  mail_reply                 reply to MAIL (spec, or list of specs consumed per transaction)
  rcpt_replies               {"addr@x": spec} per recipient address (case-insensitive)
  rcpt_reply                 default reply to RCPT
  data_reply                 reply to DATA (354 ... or an error)
  final_reply                reply after the final dot; spec, "silent" (never answer, keep
                             reading) or "close" (close the socket); or a list consumed
                             per message; or (in-process only) a callable taking the
                             Transaction and returning a spec, e.g. to fail the Nth copy
                             of a message with 4xx and accept its retry
  bdat_reply                 reply to each non-LAST BDAT chunk
  delays                     {"greeting"|"ehlo"|"starttls"|"mail"|"rcpt"|"data"|"final": seconds}
  data_end                   "strict" (only CRLF.CRLF ends data, default) or "lenient"
                             (LF.LF, LF.CRLF etc. also end data, like many real MTAs; used
                             to make smuggling attempts visible as extra transactions)
  max_line                   longest command line accepted (default 65536)
  max_message                largest message accepted (default 128 MiB)
  idle_timeout               seconds a connection may be idle (default 60)
  xclient                    list of XCLIENT attribute names to advertise (null: no XCLIENT);
                             like Postfix, XCLIENT is no longer offered once it succeeded
  xclient_reply              reply to XCLIENT (default: a new greeting, as Postfix sends);
                             a 2xx reply starts the session over (EHLO needed)
  xforward                   list of XFORWARD attribute names to advertise (null: none)
  xforward_reply             reply to XFORWARD (default "250 2.0.0 Ok")

A reply "spec" is an int (code; a default text is added), a string (a full reply
line, e.g. "451 4.3.0 try later"; multi-line replies may be given as a list of
strings), or one of "silent" / "close".
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "hostname": "upstream.test",
    "tls": "starttls",
    "cert": None,
    "key": None,
    "tls_min_version": None,
    "tls_max_version": None,
    "advertise_starttls": None,
    "starttls_reply": "220 2.0.0 Ready to start TLS",
    "starttls_inject": "",
    "greeting": None,
    "ehlo_extensions": [],
    "size": 104857600,
    "smtputf8": False,
    "dsn": False,
    "chunking": False,
    "pipelining": True,
    "eightbitmime": True,
    "auth": None,
    "auth_before_tls": False,
    "require_tls": False,
    "mail_reply": "250 2.1.0 Ok",
    "rcpt_replies": {},
    "rcpt_reply": "250 2.1.5 Ok",
    "data_reply": "354 End data with <CR><LF>.<CR><LF>",
    "final_reply": "250 2.0.0 Ok: queued",
    "bdat_reply": None,
    "delays": {},
    "data_end": "strict",
    "max_line": 65536,
    "max_message": 128 * 1024 * 1024,
    "idle_timeout": 60.0,
    "xclient": None,
    "xclient_reply": None,
    "xforward": None,
    "xforward_reply": "250 2.0.0 Ok",
}

DEFAULT_TEXT = {
    211: "2.0.0 status", 214: "2.0.0 help", 220: "2.0.0 Ready", 221: "2.0.0 Bye",
    235: "2.7.0 Authentication successful", 250: "2.0.0 Ok", 251: "2.1.5 forwarded",
    252: "2.5.0 Cannot VRFY", 334: "", 354: "End data with <CR><LF>.<CR><LF>",
    421: "4.3.0 Service not available", 450: "4.2.1 Mailbox unavailable",
    451: "4.3.0 Local error in processing", 452: "4.3.1 Insufficient system storage",
    454: "4.7.0 TLS not available due to temporary reason", 500: "5.5.2 Syntax error",
    501: "5.5.4 Syntax error in parameters", 502: "5.5.1 Command not implemented",
    503: "5.5.1 Bad sequence of commands", 530: "5.7.0 Must issue a STARTTLS command first",
    535: "5.7.8 Authentication credentials invalid", 550: "5.1.1 Mailbox unavailable",
    552: "5.3.4 Message too big", 553: "5.1.3 Mailbox name not allowed",
    554: "5.0.0 Transaction failed",
}

TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3,
}


def _unescape(s: str) -> bytes:
    return s.encode("utf-8").decode("unicode_escape").encode("latin-1")


def format_reply(spec: Any) -> Optional[bytes]:
    """Turn a reply spec into wire bytes. Returns None for silent/close."""
    if spec in ("silent", "close") or spec is None:
        return None
    if isinstance(spec, int):
        text = DEFAULT_TEXT.get(spec, "Reply")
        return f"{spec} {text}".rstrip(" ").encode() + b"\r\n" if text else f"{spec} ".encode() + b"\r\n"
    if isinstance(spec, (list, tuple)):
        lines = [str(x) for x in spec]
        out = b""
        for i, line in enumerate(lines):
            code, rest = line[:3], line[4:] if len(line) > 3 else ""
            sep = " " if i == len(lines) - 1 else "-"
            out += f"{code}{sep}{rest}".encode("utf-8") + b"\r\n"
        return out
    return str(spec).encode("utf-8") + b"\r\n"


def reply_code(spec: Any) -> Optional[int]:
    if isinstance(spec, int):
        return spec
    if isinstance(spec, (list, tuple)):
        spec = spec[-1]
    if isinstance(spec, str) and spec[:3].isdigit():
        return int(spec[:3])
    return None


@dataclass
class Transaction:
    session: int
    tls: bool
    mail: bytes                      # full MAIL line (without CRLF), params included
    mail_reply: Optional[int] = None
    rcpts: list = field(default_factory=list)          # full RCPT lines (without CRLF)
    rcpt_codes: list = field(default_factory=list)     # reply code per RCPT line
    data_command: Optional[bytes] = None               # b"DATA" or the BDAT lines
    data_reply: Optional[int] = None
    raw_data: bytes = b""            # bytes exactly as received after 354, incl. terminator
    content: Optional[bytes] = None  # dot-unstuffed message (None = no complete message)
    complete: bool = False           # end of data seen
    terminator: Optional[bytes] = None  # the bytes that ended the data (strict: b"\r\n.\r\n")
    final_reply: Any = None          # spec sent after the dot (code / "silent" / "close")
    xforward: dict = field(default_factory=dict)   # XFORWARD attributes in force at MAIL (decoded)

    @property
    def mail_from(self) -> bytes:
        return _addr(self.mail)

    @property
    def rcpt_addrs(self) -> list:
        return [_addr(r) for r in self.rcpts]

    @property
    def mail_params(self) -> list:
        return _params(self.mail)

    def to_json(self) -> dict:
        return {
            "session": self.session, "tls": self.tls,
            "mail": self.mail.decode("latin-1"), "mail_reply": self.mail_reply,
            "rcpts": [r.decode("latin-1") for r in self.rcpts], "rcpt_codes": self.rcpt_codes,
            "data_command": self.data_command.decode("latin-1") if self.data_command else None,
            "data_reply": self.data_reply, "complete": self.complete,
            "content": self.content.decode("latin-1") if self.content is not None else None,
            "raw_data": self.raw_data.decode("latin-1"),
            "final_reply": self.final_reply, "xforward": self.xforward,
        }


def xtext_decode(value: bytes) -> bytes:
    """RFC 1891 xtext; raises ValueError on a malformed "+HH"."""
    out, i = bytearray(), 0
    while i < len(value):
        if value[i:i + 1] == b"+":
            h = value[i + 1:i + 3]
            if len(h) != 2 or not all(c in b"0123456789ABCDEF" for c in h):
                raise ValueError(f"bad xtext {value!r}")
            out.append(int(h, 16))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return bytes(out)


def parse_attributes(line: bytes) -> dict:
    """'XCLIENT A=v B=w' -> {"A": "v", "B": "w"} (names upper case, values xtext-decoded)."""
    attrs = {}
    for word in line.split(b" ")[1:]:
        if not word:
            continue
        name, sep, value = word.partition(b"=")
        if not sep:
            raise ValueError(f"attribute without '=': {word!r}")
        attrs[name.decode("ascii").upper()] = xtext_decode(value).decode("utf-8", "replace")
    return attrs


def _addr(line: bytes) -> bytes:
    lt, gt = line.find(b"<"), line.find(b">")
    if lt >= 0 and gt > lt:
        return line[lt + 1:gt]
    parts = line.split(b":", 1)
    return parts[1].strip().split(b" ")[0] if len(parts) == 2 else b""


def _params(line: bytes) -> list:
    gt = line.find(b">")
    rest = line[gt + 1:] if gt >= 0 else b""
    return [p for p in rest.strip().split(b" ") if p]


@dataclass
class Session:
    id: int
    peer: Any
    raw_pre_tls: bytearray = field(default_factory=bytearray)
    raw_post_tls: bytearray = field(default_factory=bytearray)
    commands: list = field(default_factory=list)   # (tls: bool, line bytes without CRLF)
    tls: bool = False
    tls_version: Optional[str] = None
    tls_error: Optional[str] = None
    starttls_requested: bool = False
    pipelined_before_tls: bytes = b""   # bytes that followed STARTTLS in the plaintext buffer
    auth: list = field(default_factory=list)    # (mechanism, user, ok)
    violations: list = field(default_factory=list)
    transactions: list = field(default_factory=list)
    closed: bool = False
    close_reason: str = ""
    xclient: list = field(default_factory=list)  # one dict per accepted XCLIENT (decoded values)
    helo_names: list = field(default_factory=list)  # (verb, name) of every EHLO/HELO

    @property
    def raw(self) -> bytes:
        return bytes(self.raw_pre_tls) + bytes(self.raw_post_tls)

    def verbs(self, tls: Optional[bool] = None) -> list:
        out = []
        for t, line in self.commands:
            if tls is None or t == tls:
                out.append(line.split(b" ", 1)[0].split(b":", 1)[0].upper())
        return out

    def to_json(self) -> dict:
        return {
            "id": self.id, "peer": str(self.peer), "tls": self.tls, "tls_version": self.tls_version,
            "tls_error": self.tls_error, "starttls_requested": self.starttls_requested,
            "raw_pre_tls": bytes(self.raw_pre_tls).decode("latin-1"),
            "raw_post_tls": bytes(self.raw_post_tls).decode("latin-1"),
            "commands": [[t, c.decode("latin-1")] for t, c in self.commands],
            "pipelined_before_tls": self.pipelined_before_tls.decode("latin-1"),
            "auth": self.auth, "violations": self.violations,
            "transactions": [t.to_json() for t in self.transactions],
            "closed": self.closed, "close_reason": self.close_reason,
            "xclient": self.xclient, "helo_names": self.helo_names,
        }


class _Closed(Exception):
    pass


class _Conn:
    """Buffered, bounded, recording reader/writer over a (possibly TLS) socket."""

    def __init__(self, sock: socket.socket, session: Session, idle_timeout: float, stop: threading.Event):
        self.sock = sock
        self.session = session
        self.buf = bytearray()
        self.stop = stop
        self.sock.settimeout(0.25)
        self.idle_timeout = idle_timeout

    def _fill(self) -> None:
        deadline = time.monotonic() + self.idle_timeout
        while True:
            if self.stop.is_set():
                raise _Closed("server stopping")
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                if time.monotonic() > deadline:
                    raise _Closed("idle timeout")
                continue
            except ssl.SSLError as e:
                raise _Closed(f"ssl error: {e}")
            except OSError as e:
                raise _Closed(f"recv error: {e}")
            if not chunk:
                raise _Closed("peer closed")
            if self.session.tls:
                self.session.raw_post_tls += chunk
            else:
                self.session.raw_pre_tls += chunk
            self.buf += chunk
            return

    def readline(self, limit: int) -> tuple[bytes, bool]:
        """Read one line terminated by LF. Returns (line incl. terminator, overlong)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return (b"", True) if len(line) > limit else (line, False)
            if len(self.buf) > limit:
                # discard until the end of this line
                del self.buf[:]
                while True:
                    self._fill()
                    j = self.buf.find(b"\n")
                    if j >= 0:
                        del self.buf[:j + 1]
                        return b"", True
                    del self.buf[:]
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(10)
            self.sock.sendall(data)
        except OSError as e:
            raise _Closed(f"send error: {e}")
        finally:
            try:
                self.sock.settimeout(0.25)
            except OSError:
                pass


class Upstream:
    def __init__(self, script: Optional[dict] = None, **kw: Any):
        cfg = dict(DEFAULTS)
        cfg.update(script or {})
        cfg.update(kw)
        if cfg["advertise_starttls"] is None:
            cfg["advertise_starttls"] = cfg["tls"] == "starttls"
        if cfg["tls"] not in ("starttls", "implicit", "none"):
            raise ValueError(f"bad tls mode {cfg['tls']!r}")
        self.cfg = cfg
        self.sessions: list[Session] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._mail_idx = 0
        self._final_idx = 0
        self.port: int = 0
        self.host: str = cfg["host"]
        self.errors: list[str] = []   # internal errors of the harness itself
        self._ssl_ctx: Optional[ssl.SSLContext] = None
        if cfg["tls"] != "none" or cfg["cert"]:
            self._ssl_ctx = self._make_ctx()

    # ---- setup -----------------------------------------------------------
    def _make_ctx(self) -> Optional[ssl.SSLContext]:
        c = self.cfg
        if not c["cert"] or not c["key"]:
            if c["tls"] == "none":
                return None
            raise ValueError("tls mode needs cert and key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if c["tls_min_version"] or c["tls_max_version"]:
            # allow old protocol versions when explicitly asked for
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            if c["tls_min_version"]:
                ctx.minimum_version = TLS_VERSIONS[c["tls_min_version"]]
            if c["tls_max_version"]:
                ctx.maximum_version = TLS_VERSIONS[c["tls_max_version"]]
        ctx.load_cert_chain(c["cert"], c["key"])
        return ctx

    def start(self) -> "Upstream":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.cfg["host"], int(self.cfg["port"])))
        s.listen(64)
        s.settimeout(0.2)
        self._listener = s
        self.port = s.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="upstream-accept", daemon=True)
        self._accept_thread.start()
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self.lock:
            socks = list(self._socks)
        for so in socks:
            try:
                so.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._accept_thread:
            self._accept_thread.join(timeout)
        for t in list(self._threads):
            t.join(timeout)
        for so in socks:
            try:
                so.close()
            except OSError:
                pass

    def __enter__(self) -> "Upstream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                sess = Session(id=len(self.sessions), peer=peer)
                self.sessions.append(sess)
                self._socks.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, sess), name=f"upstream-{sess.id}", daemon=True)
            self._threads.append(t)
            t.start()

    # ---- recorded views --------------------------------------------------
    @property
    def transactions(self) -> list:
        with self.lock:
            return [t for s in self.sessions for t in s.transactions]

    @property
    def messages(self) -> list:
        """Transactions whose data was completely received (end-of-data seen)."""
        return [t for t in self.transactions if t.complete]

    @property
    def raw(self) -> bytes:
        with self.lock:
            return b"".join(s.raw for s in self.sessions)

    @property
    def raw_pre_tls(self) -> bytes:
        with self.lock:
            return b"".join(bytes(s.raw_pre_tls) for s in self.sessions)

    @property
    def raw_post_tls(self) -> bytes:
        with self.lock:
            return b"".join(bytes(s.raw_post_tls) for s in self.sessions)

    def commands(self, tls: Optional[bool] = None) -> list:
        with self.lock:
            return [c for s in self.sessions for (t, c) in s.commands if tls is None or t == tls]

    def verbs(self, tls: Optional[bool] = None) -> list:
        with self.lock:
            return [v for s in self.sessions for v in s.verbs(tls)]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(interval)
        return pred()

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until every session seen so far has ended."""
        return self.wait_for(lambda: all(s.closed for s in list(self.sessions)), timeout)

    def to_json(self) -> dict:
        with self.lock:
            return {"port": self.port, "errors": self.errors, "sessions": [s.to_json() for s in self.sessions]}

    # ---- protocol --------------------------------------------------------
    def _delay(self, phase: str) -> None:
        d = float(self.cfg["delays"].get(phase, 0) or 0)
        end = time.monotonic() + d
        while time.monotonic() < end and not self._stop.is_set():
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _next(self, key: str, idx_attr: str) -> Any:
        """A list value is a sequence consumed one element per transaction (last one repeats)."""
        v = self.cfg[key]
        if isinstance(v, list):
            with self.lock:
                i = getattr(self, idx_attr)
                setattr(self, idx_attr, i + 1)
            return v[min(i, len(v) - 1)] if v else None
        return v

    def _ehlo_lines(self, sess: Session) -> list:
        c = self.cfg
        lines = [c["hostname"]]
        if c["pipelining"]:
            lines.append("PIPELINING")
        if c["size"] is not None:
            lines.append(f"SIZE {c['size']}")
        if c["eightbitmime"]:
            lines.append("8BITMIME")
        lines.append("ENHANCEDSTATUSCODES")
        if c["smtputf8"]:
            lines.append("SMTPUTF8")
        if c["dsn"]:
            lines.append("DSN")
        if c["chunking"]:
            lines.append("CHUNKING")
        if c["auth"] and (sess.tls or c["auth_before_tls"]):
            lines.append("AUTH PLAIN LOGIN")
        if c["advertise_starttls"] and not sess.tls:
            lines.append("STARTTLS")
        if c["xclient"] is not None and not sess.xclient:
            lines.append(" ".join(["XCLIENT"] + list(c["xclient"])))
        if c["xforward"] is not None:
            lines.append(" ".join(["XFORWARD"] + list(c["xforward"])))
        lines.extend(c["ehlo_extensions"])
        return ["250 " + l for l in lines]

    def _serve(self, sock: socket.socket, sess: Session) -> None:
        conn = _Conn(sock, sess, float(self.cfg["idle_timeout"]), self._stop)
        try:
            if self.cfg["tls"] == "implicit":
                self._handshake(conn, sess)
            self._delay("greeting")
            greeting = self.cfg["greeting"] or f"220 {self.cfg['hostname']} ESMTP upstream"
            conn.send(format_reply(greeting))
            self._loop(conn, sess)
        except _Closed as e:
            sess.close_reason = str(e)
        except Exception as e:  # harness bug: record it, never crash the test run
            sess.close_reason = f"harness error: {e!r}"
            self.errors.append(repr(e))
        finally:
            sess.closed = True
            try:
                conn.sock.close()
            except OSError:
                pass

    def _handshake(self, conn: _Conn, sess: Session) -> None:
        raw = conn.sock
        raw.settimeout(10)
        try:
            tls = self._ssl_ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sess.tls_error = str(e)
            raise _Closed(f"tls handshake failed: {e}")
        with self.lock:
            self._socks.append(tls)
        conn.sock = tls
        conn.sock.settimeout(0.25)
        sess.tls = True
        sess.tls_version = tls.version()

    def _loop(self, conn: _Conn, sess: Session) -> None:
        c = self.cfg
        txn: Optional[Transaction] = None
        helo = False
        authed = False
        xforward: dict = {}
        while True:
            raw_line, overlong = conn.readline(int(c["max_line"]))
            if overlong:
                sess.violations.append("overlong command line")
                conn.send(b"500 5.5.2 Line too long\r\n")
                continue
            if not raw_line.endswith(b"\r\n"):
                sess.violations.append(f"command not terminated by CRLF: {raw_line!r}")
            line = raw_line.rstrip(b"\r\n")
            sess.commands.append((sess.tls, line))
            if b"\r" in line or b"\x00" in line:
                sess.violations.append(f"CR/NUL inside command: {line!r}")
            verb = line.split(b" ", 1)[0].upper()
            if verb.startswith(b"MAIL") or verb.startswith(b"RCPT"):
                verb = verb.split(b":", 1)[0]

            if verb in (b"EHLO", b"HELO"):
                self._delay("ehlo")
                txn = None
                helo = True
                xforward = {}
                sess.helo_names.append((verb.decode(), line[5:].decode("utf-8", "replace")))
                if verb == b"HELO":
                    conn.send(f"250 {c['hostname']}\r\n".encode())
                else:
                    conn.send(format_reply(self._ehlo_lines(sess)))
            elif verb == b"STARTTLS":
                self._delay("starttls")
                sess.starttls_requested = True
                if sess.tls or not c["advertise_starttls"] or c["tls"] != "starttls":
                    conn.send(b"502 5.5.1 STARTTLS not available\r\n" if not sess.tls
                              else b"503 5.5.1 TLS already active\r\n")
                    continue
                rep = c["starttls_reply"]
                code = reply_code(rep)
                if code != 220:
                    conn.send(format_reply(rep))
                    if code == 421:
                        raise _Closed("421 after STARTTLS")
                    continue
                if conn.buf:
                    # RFC 3207: must be discarded; record as the client's protocol violation
                    sess.pipelined_before_tls = bytes(conn.buf)
                    sess.violations.append(f"bytes pipelined after STARTTLS: {bytes(conn.buf)!r}")
                    del conn.buf[:]
                conn.send(format_reply(rep) + _unescape(c["starttls_inject"]))
                self._handshake(conn, sess)
                helo = False
                txn = None
            elif verb == b"AUTH":
                authed = self._auth(conn, sess, line, authed)
            elif verb == b"XCLIENT":
                if c["xclient"] is None or sess.xclient:
                    conn.send(b"550 5.7.0 Error: insufficient authorization\r\n")
                    continue
                if txn is not None:
                    conn.send(b"503 5.5.1 Error: MAIL transaction in progress\r\n")
                    continue
                try:
                    attrs = parse_attributes(line)
                except ValueError as e:
                    sess.violations.append(f"malformed XCLIENT: {e}")
                    conn.send(b"501 5.5.4 Bad XCLIENT syntax\r\n")
                    continue
                unknown = set(attrs) - {a.upper() for a in c["xclient"]}
                if unknown:
                    sess.violations.append(f"XCLIENT attributes not offered: {sorted(unknown)}")
                    conn.send(b"501 5.5.4 Bad XCLIENT attribute name\r\n")
                    continue
                rep = c["xclient_reply"] or f"220 {c['hostname']} ESMTP upstream"
                code = reply_code(rep)
                if code is not None and code < 300:
                    sess.xclient.append(attrs)
                    helo = False
                    authed = bool(attrs.get("LOGIN"))
                    xforward = {}
                if self._reply(conn, rep) is False:
                    return
            elif verb == b"XFORWARD":
                if c["xforward"] is None:
                    conn.send(b"550 5.7.0 Error: insufficient authorization\r\n")
                    continue
                if txn is not None:
                    conn.send(b"503 5.5.1 Error: MAIL transaction in progress\r\n")
                    continue
                try:
                    attrs = parse_attributes(line)
                except ValueError as e:
                    sess.violations.append(f"malformed XFORWARD: {e}")
                    conn.send(b"501 5.5.4 Bad XFORWARD syntax\r\n")
                    continue
                rep = c["xforward_reply"]
                code = reply_code(rep)
                if code is not None and code < 300:
                    xforward.update(attrs)
                if self._reply(conn, rep) is False:
                    return
            elif verb == b"MAIL":
                if not helo:
                    conn.send(b"503 5.5.1 EHLO first\r\n")
                    continue
                if txn is not None:
                    conn.send(b"503 5.5.1 Nested MAIL command\r\n")
                    continue
                if c["require_tls"] and not sess.tls:
                    conn.send(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
                    continue
                txn = Transaction(session=sess.id, tls=sess.tls, mail=line, xforward=dict(xforward))
                sess.transactions.append(txn)
                self._delay("mail")
                rep = self._next("mail_reply", "_mail_idx")
                txn.mail_reply = reply_code(rep)
                if self._reply(conn, rep) is False:
                    return
                if txn.mail_reply is None or txn.mail_reply >= 300:
                    txn = None
            elif verb == b"RCPT":
                if txn is None:
                    conn.send(b"503 5.5.1 Need MAIL first\r\n")
                    continue
                addr = _addr(line).decode("utf-8", "replace").lower()
                rep = {k.lower(): v for k, v in c["rcpt_replies"].items()}.get(addr, c["rcpt_reply"])
                txn.rcpts.append(line)
                txn.rcpt_codes.append(reply_code(rep))
                self._delay("rcpt")
                if self._reply(conn, rep) is False:
                    return
            elif verb == b"DATA":
                if txn is None:
                    conn.send(b"503 5.5.1 Need MAIL first\r\n")
                    continue
                if not any(code is not None and code < 300 for code in txn.rcpt_codes):
                    conn.send(b"554 5.5.1 No valid recipients\r\n")
                    continue
                txn.data_command = line
                self._delay("data")
                rep = c["data_reply"]
                txn.data_reply = reply_code(rep)
                if self._reply(conn, rep) is False:
                    return
                if txn.data_reply != 354:
                    continue
                self._read_data(conn, txn)
                xforward = {}
                if self._final(conn, sess, txn) is False:
                    return
                txn = None
            elif verb == b"BDAT":
                if txn is None:
                    conn.send(b"503 5.5.1 Need MAIL first\r\n")
                    continue
                parts = line.split()
                try:
                    n = int(parts[1])
                except (IndexError, ValueError):
                    conn.send(b"501 5.5.4 Bad BDAT\r\n")
                    continue
                if n > int(c["max_message"]):
                    raise _Closed("BDAT chunk too large")
                last = len(parts) > 2 and parts[2].upper() == b"LAST"
                chunk = conn.read_exact(n)
                txn.data_command = (txn.data_command + b"\n" if txn.data_command else b"") + line
                txn.raw_data += chunk
                if not last:
                    conn.send(format_reply(c["bdat_reply"] or f"250 2.0.0 {n} octets received"))
                    continue
                txn.content = txn.raw_data
                txn.complete = True
                xforward = {}
                if self._final(conn, sess, txn) is False:
                    return
                txn = None
            elif verb == b"RSET":
                txn = None
                xforward = {}
                conn.send(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                conn.send(b"250 2.0.0 Ok\r\n")
            elif verb == b"VRFY":
                conn.send(b"252 2.5.0 Cannot VRFY\r\n")
            elif verb == b"QUIT":
                conn.send(b"221 2.0.0 Bye\r\n")
                raise _Closed("quit")
            else:
                conn.send(b"502 5.5.1 Command not recognized\r\n")

    def _reply(self, conn: _Conn, spec: Any) -> Optional[bool]:
        if spec == "close":
            raise _Closed("scripted close")
        if spec == "silent":
            self._silent(conn)
            return False
        conn.send(format_reply(spec))
        return None

    def _silent(self, conn: _Conn) -> None:
        # never answer again; keep recording whatever arrives until the peer goes away
        while True:
            conn._fill()
            del conn.buf[:]

    def _final(self, conn: _Conn, sess: Session, txn: Transaction) -> Optional[bool]:
        self._delay("final")
        if callable(self.cfg["final_reply"]):
            with self.lock:
                rep = self.cfg["final_reply"](txn)
        else:
            rep = self._next("final_reply", "_final_idx")
        txn.final_reply = rep
        return self._reply(conn, rep)

    def _read_data(self, conn: _Conn, txn: Transaction) -> None:
        """Read message data after 354.

        strict:  only CRLF "." CRLF ends the data (the "." line must follow a CRLF).
        lenient: every LF ends a line, trailing CRs are ignored, so LF.LF, LF.CRLF and
                 CRLF.CR CRLF also end the data (what sloppy real MTAs do).  Used to make a
                 smuggled second message visible as a second transaction.
        """
        lenient = self.cfg["data_end"] == "lenient"
        limit = int(self.cfg["max_message"])
        raw = bytearray()
        content = bytearray()
        at_line_start = True
        while True:
            line, overlong = conn.readline(limit + 8)
            if overlong:
                txn.raw_data = bytes(raw)
                raise _Closed("data line exceeds harness max_message")
            raw += line
            if len(raw) > limit:
                txn.raw_data = bytes(raw)
                raise _Closed("message exceeds harness max_message")
            if lenient:
                if line.rstrip(b"\n").rstrip(b"\r") == b".":
                    txn.terminator = line
                    break
            elif at_line_start and line == b".\r\n":
                txn.terminator = b"\r\n.\r\n"
                break
            if at_line_start and line.startswith(b"."):
                content += line[1:]
            else:
                content += line
            at_line_start = lenient or line.endswith(b"\r\n")
        txn.raw_data = bytes(raw)
        txn.content = bytes(content)
        txn.complete = True

    def _auth(self, conn: _Conn, sess: Session, line: bytes, authed: bool) -> bool:
        c = self.cfg
        creds = c["auth"]
        if not creds or (not sess.tls and not c["auth_before_tls"]):
            conn.send(b"503 5.5.1 AUTH not available\r\n")
            return authed
        if authed:
            conn.send(b"503 5.5.1 Already authenticated\r\n")
            return authed
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else b""
        user = pw = None
        if mech == b"PLAIN":
            if len(parts) > 2:
                resp = parts[2]
            else:
                conn.send(b"334 \r\n")
                resp, _ = conn.readline(4096)
                resp = resp.strip()
                sess.commands.append((sess.tls, resp))
            if resp == b"*":
                conn.send(b"501 5.7.0 Authentication cancelled\r\n")
                return False
            try:
                _authz, user, pw = base64.b64decode(resp, validate=True).split(b"\x00")
            except Exception:
                conn.send(b"501 5.5.2 Cannot decode response\r\n")
                return False
        elif mech == b"LOGIN":
            try:
                if len(parts) > 2:
                    user = base64.b64decode(parts[2], validate=True)
                else:
                    conn.send(b"334 VXNlcm5hbWU6\r\n")
                    r, _ = conn.readline(4096)
                    sess.commands.append((sess.tls, r.strip()))
                    user = base64.b64decode(r.strip(), validate=True)
                conn.send(b"334 UGFzc3dvcmQ6\r\n")
                r, _ = conn.readline(4096)
                sess.commands.append((sess.tls, r.strip()))
                pw = base64.b64decode(r.strip(), validate=True)
            except Exception:
                conn.send(b"501 5.5.2 Cannot decode response\r\n")
                return False
        else:
            conn.send(b"504 5.5.4 Unrecognized authentication type\r\n")
            return False
        ok = user == creds["user"].encode() and pw == creds["password"].encode()
        sess.auth.append((mech.decode(), (user or b"").decode("latin-1"), ok))
        conn.send(b"235 2.7.0 Authentication successful\r\n" if ok
                  else b"535 5.7.8 Authentication credentials invalid\r\n")
        return ok


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="JSON script (see module docstring)")
    ap.add_argument("--port", type=int, help="override the listen port")
    ap.add_argument("--record", help="write everything received to this JSON file at exit")
    args = ap.parse_args(argv)
    script = {}
    if args.config:
        with open(args.config) as f:
            script = json.load(f)
    if args.port is not None:
        script["port"] = args.port
    up = Upstream(script).start()
    print(f"upstream: listening on {up.host}:{up.port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    up.stop()
    if args.record:
        with open(args.record, "w") as f:
            json.dump(up.to_json(), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
