"""SMTP clients for the tests: a raw byte-level client, smtplib and swaks helpers."""
from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class Reply:
    code: int
    lines: list          # text of each line (without code and separator)
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> Optional[str]:
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", self.lines[-1] if self.lines else "")
        return m.group(1) if m else None

    def __repr__(self) -> str:
        return f"Reply({self.raw!r})"


class ConnectionClosed(Exception):
    pass


class RawSMTP:
    """Byte-exact SMTP client: send what you want, read replies one by one."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, implicit_tls: bool = False,
                 ca_file: Optional[str] = None, server_hostname: str = "localhost",
                 source: Optional[str] = None):
        self.host, self.port, self.timeout = host, port, timeout
        self.ca_file = ca_file
        self.server_hostname = server_hostname
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = bytearray()
        self.tls = False
        self.transcript = bytearray()   # everything received, for debugging
        if implicit_tls:
            self.starttls_handshake()

    # ---- I/O -------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def _fill(self, timeout: Optional[float]) -> None:
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise ConnectionClosed(str(e))
        except ssl.SSLError as e:
            raise ConnectionClosed(f"ssl: {e}")
        if not chunk:
            raise ConnectionClosed("server closed the connection")
        self.transcript += chunk
        self.buf += chunk

    def reply(self, timeout: Optional[float] = None) -> Reply:
        """Read one complete (possibly multi-line) reply."""
        lines, raw = [], bytearray()
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no complete reply")
                self._fill(left)
                continue
            line = bytes(self.buf[:i + 1])
            del self.buf[:i + 1]
            raw += line
            s = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(s) < 3 or not s[:3].isdigit():
                raise AssertionError(f"malformed reply line {line!r}")
            lines.append(s[4:])
            if len(s) == 3 or s[3] == " ":
                return Reply(int(s[:3]), lines, bytes(raw))
            if s[3] != "-":
                raise AssertionError(f"malformed reply line {line!r}")

    def replies(self, n: int, timeout: Optional[float] = None) -> list:
        return [self.reply(timeout) for _ in range(n)]

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Assert the server closes the connection; returns any bytes that came before."""
        deadline = time.monotonic() + timeout
        got = bytes(self.buf)
        self.buf.clear()
        while time.monotonic() < deadline:
            try:
                self._fill(max(0.01, deadline - time.monotonic()))
                got += bytes(self.buf)
                self.buf.clear()
            except ConnectionClosed:
                return got
            except socket.timeout:
                break
            except OSError:
                return got
        raise AssertionError(f"connection still open after {timeout}s; received {got!r}")

    def is_closed(self, timeout: float = 1.0) -> bool:
        try:
            self.expect_closed(timeout)
            return True
        except AssertionError:
            return False

    # ---- SMTP steps ------------------------------------------------------
    def greeting(self) -> Reply:
        return self.reply()

    def ehlo(self, name: str = "client.test") -> Reply:
        return self.cmd(f"EHLO {name}")

    def starttls_handshake(self) -> None:
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl._create_unverified_context()
        if self.buf:
            raise AssertionError(f"server sent bytes before TLS handshake: {bytes(self.buf)!r}")
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server_hostname)
        self.tls = True

    def starttls(self) -> Reply:
        r = self.cmd("STARTTLS")
        if r.code == 220:
            self.starttls_handshake()
        return r

    def start(self, tls: bool = True, name: str = "client.test") -> Reply:
        """Greeting, EHLO, [STARTTLS, EHLO]. Returns the last EHLO reply."""
        g = self.greeting()
        assert g.code == 220, g
        e = self.ehlo(name)
        assert e.code == 250, e
        if tls:
            r = self.starttls()
            assert r.code == 220, r
            e = self.ehlo(name)
            assert e.code == 250, e
        return e

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def quit(self) -> None:
        try:
            self.cmd("QUIT")
        except Exception:
            pass
        self.close()

    def __enter__(self) -> "RawSMTP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ehlo_keywords(reply: Reply) -> dict:
    """{'SIZE': '52428800', 'PIPELINING': '', ...} from an EHLO reply (first line skipped)."""
    out = {}
    for line in reply.lines[1:]:
        k, _, v = line.partition(" ")
        out[k.upper()] = v
    return out


def dot_stuff(body: bytes) -> bytes:
    """CRLF-normalised, dot-stuffed body plus terminator, as a client sends it."""
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    return out + b".\r\n"


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx


def smtplib_send(port: int, ca_file: str, sender: str, rcpts: list, msg: bytes,
                 host: str = "127.0.0.1", tls: bool = True, mail_options=(), rcpt_options=(),
                 timeout: float = 15.0) -> dict:
    """Send with smtplib (STARTTLS, verifying sealgate's cert with the test CA).

    Returns smtplib's refused dict; raises smtplib exceptions on errors."""
    with smtplib.SMTP(host, port, timeout=timeout, local_hostname="client.test") as s:
        s.ehlo()
        if tls:
            s.starttls(context=client_ssl_context(ca_file))
            s.ehlo()
        return s.sendmail(sender, rcpts, msg, mail_options=list(mail_options),
                          rcpt_options=list(rcpt_options))


@dataclass
class SwaksResult:
    rc: int
    out: str
    err: str

    def server_lines(self) -> list:
        """Lines swaks received from the server ('<-' or '<~' prefixed)."""
        return [l for l in self.out.splitlines() if re.match(r"^\s*<[-~*]", l)]


def swaks_available() -> bool:
    return shutil.which("swaks") is not None


def swaks(port: int, ca_file: Optional[str] = None, *args: str, host: str = "127.0.0.1",
          tls: bool = True, timeout: int = 20) -> SwaksResult:
    """Run swaks against host:port. With tls=True: STARTTLS required and sealgate's
    certificate verified against ca_file (--tls-verify --tls-ca-path)."""
    cmd = ["swaks", "--server", host, "--port", str(port), "--helo", "client.test",
           "--timeout", str(timeout)]
    if tls:
        cmd += ["--tls"]
        if ca_file:
            cmd += ["--tls-verify", "--tls-ca-path", ca_file]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    return SwaksResult(r.returncode, r.stdout, r.stderr)
