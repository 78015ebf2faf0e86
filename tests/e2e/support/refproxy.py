#!/usr/bin/env python3
"""Reference model of sealgate's relay contract, in Python.  NOT the product.

It exists only to validate the black-box test suite while the Rust binary is not
ready: if the tests fail against this model, the tests (or the model) are wrong.

    SEALGATE_BIN=tests/e2e/support/refproxy.sh python3 -m pytest tests/e2e/test_relay.py

Usage mirrors the binary: refproxy.py serve --config FILE
"""
from __future__ import annotations

import base64
import re
import signal
import socket
import ssl
import sys
import threading
import os
import tomllib

# deliberate bugs, to prove that the test suite catches them (mutation check)
BUGS = set(filter(None, os.environ.get("REFPROXY_BUGS", "").split(",")))


class Fail(Exception):
    def __init__(self, reply: str):
        self.reply = reply


class Closed(Exception):
    pass


class Stream:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def fill(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise
        except (OSError, ssl.SSLError) as e:
            raise Closed(str(e))
        if not d:
            raise Closed("eof")
        self.buf += d

    def line(self, timeout: float, limit: int = 1 << 20) -> tuple[bytes, bool]:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                ln = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return (ln, len(ln) > limit)
            if len(self.buf) > limit:
                del self.buf[:]
                while True:
                    self.fill(timeout)
                    j = self.buf.find(b"\n")
                    if j >= 0:
                        del self.buf[:j + 1]
                        return (b"", True)
                    del self.buf[:]
            self.fill(timeout)

    def exact(self, n: int, timeout: float) -> bytes:
        while len(self.buf) < n:
            self.fill(timeout)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def reply(self, timeout: float) -> tuple[int, bytes]:
        raw = b""
        while True:
            ln, _ = self.line(timeout)
            raw += ln
            if len(ln) < 4 or ln[3:4] != b"-":
                return int(ln[:3]), raw

    def send(self, b: bytes) -> None:
        try:
            self.sock.sendall(b)
        except OSError as e:
            raise Closed(str(e))


class Upstream:
    def __init__(self, cfg: dict, limits: dict):
        self.cfg, self.lim = cfg, limits
        self.ext: dict = {}
        self.s: Stream | None = None
        self.error: str | None = None
        self.ready = threading.Event()

    def setup(self) -> None:
        try:
            self._setup()
        except Fail as f:
            self.error = f.reply
        except socket.timeout:
            self.error = "451 4.4.2 upstream timeout"
        except Closed:
            self.error = "451 4.4.2 upstream closed the connection"
        except OSError:
            self.error = "451 4.4.1 upstream unreachable"
        finally:
            self.ready.set()

    def _ehlo(self, hostname: str) -> None:
        self.s.send(f"EHLO {hostname}\r\n".encode())
        code, raw = self.s.reply(self.lim["upstream_timeout"])
        if code != 250:
            raise Fail("451 4.4.0 upstream refused EHLO")
        self.ext = {}
        for ln in raw.split(b"\r\n")[1:]:
            if len(ln) > 4:
                k, _, v = ln[4:].decode().partition(" ")
                self.ext[k.upper()] = v

    def _setup(self) -> None:
        host, port = self.cfg["address"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=self.lim["connect_timeout"])
        tls = self.cfg.get("tls", "starttls")
        ctx = ssl.create_default_context(cafile=self.cfg.get("ca_file"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if "no_verify" in BUGS:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        name = self.cfg.get("server_name") or host
        if tls == "implicit":
            sock = self._wrap(ctx, sock, name)
        self.s = Stream(sock)
        code, _ = self.s.reply(self.lim["upstream_timeout"])
        if code != 220:
            raise Fail("451 4.4.0 upstream greeting refused")
        self._ehlo("sealgate.test")
        if tls == "starttls":
            if "STARTTLS" not in self.ext:
                if "plaintext_fallback" in BUGS:
                    return
                raise Fail("454 4.7.0 upstream offers no STARTTLS")
            self.s.send(b"STARTTLS\r\n")
            code, _ = self.s.reply(self.lim["upstream_timeout"])
            if code != 220:
                raise Fail("454 4.7.0 upstream refused STARTTLS")
            if self.s.buf and "keep_injected" not in BUGS:
                raise Fail("454 4.7.0 upstream sent data after 220")
            self.s = Stream(self._wrap(ctx, self.s.sock, name))
            self._ehlo("sealgate.test")

    def _wrap(self, ctx, sock, name):
        try:
            sock.settimeout(self.lim["upstream_timeout"])
            return ctx.wrap_socket(sock, server_hostname=name)
        except ssl.SSLCertVerificationError:
            raise Fail("451 4.7.5 upstream certificate verification failed")
        except (ssl.SSLError, OSError):
            raise Fail("454 4.7.0 TLS handshake with upstream failed")

    def cmd(self, line: bytes) -> bytes:
        try:
            self.s.send(line + b"\r\n")
            return self.s.reply(self.lim["upstream_timeout"])[1]
        except (socket.timeout, Closed):
            self.error = "451 4.4.2 upstream lost"
            raise Fail("451 4.4.2 upstream did not answer")


class Session:
    def __init__(self, server: "Server", sock: socket.socket, lcfg: dict):
        self.srv, self.lcfg = server, lcfg
        self.lim = server.lim
        self.c = Stream(sock)
        self.tls = False
        self.up = Upstream(server.cfg["upstream"], self.lim)

    def send(self, s: str | bytes) -> None:
        self.c.send((s.encode() if isinstance(s, str) else s) + (b"\r\n" if isinstance(s, str) else b""))

    def run(self) -> None:
        try:
            if self.lcfg.get("tls") == "implicit":
                self._starttls()
            self.send(f"220 {self.srv.cfg['server']['hostname']} ESMTP sealgate-ref")
            threading.Thread(target=self.up.setup, daemon=True).start()
            self.loop()
        except (Closed, socket.timeout, ssl.SSLError, OSError):
            pass
        finally:
            try:
                self.c.sock.close()
            except OSError:
                pass
            if self.up.s:
                try:
                    self.up.s.sock.close()
                except OSError:
                    pass

    def _starttls(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.lcfg["cert"], self.lcfg["key"])
        self.c.sock.settimeout(10)
        self.c = Stream(ctx.wrap_socket(self.c.sock, server_side=True))
        self.tls = True

    def upstream(self) -> Upstream:
        self.up.ready.wait(self.lim["connect_timeout"] + 3 * self.lim["upstream_timeout"])
        if not self.up.ready.is_set():
            raise Fail("451 4.4.2 upstream setup timeout")
        if self.up.error:
            raise Fail(self.up.error)
        return self.up

    def ehlo_reply(self) -> str:
        lines = ["sealgate.test", "PIPELINING", f"SIZE {self.lim['max_message_size']}", "8BITMIME",
                 "ENHANCEDSTATUSCODES", "CHUNKING"]
        if not self.tls and self.lcfg.get("tls") == "starttls":
            lines.append("STARTTLS")
        self.up.ready.wait(self.lim["connect_timeout"] + 2 * self.lim["upstream_timeout"])
        ext = self.up.ext if not self.up.error else {}
        if "SMTPUTF8" in ext:
            lines.append("SMTPUTF8")
        if "DSN" in ext:
            lines.append("DSN")
        if self.tls and "AUTH" in ext:
            lines.append("AUTH PLAIN LOGIN")
        return "\r\n".join(("250-" if i < len(lines) - 1 else "250 ") + l for i, l in enumerate(lines))

    def loop(self) -> None:
        mail = False
        rcpts = 0
        accepted = 0
        bdat = bytearray()
        bdat_on = False
        ct = self.lim["command_timeout"]
        while True:
            raw, overlong = self.c.line(ct, self.lim["max_command_line"])
            if overlong:
                self.send("500 5.5.2 Line too long")
                continue
            line = raw.rstrip(b"\r\n")
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
            try:
                if verb in (b"EHLO", b"HELO"):
                    mail, rcpts, accepted = False, 0, 0
                    self.send(self.ehlo_reply())
                elif verb == b"STARTTLS":
                    if self.tls:
                        self.send("503 5.5.1 TLS already active")
                        continue
                    self.send("220 2.0.0 Ready to start TLS")
                    keep = bytes(self.c.buf) if "keep_pipelined" in BUGS else b""
                    del self.c.buf[:]
                    self._starttls()
                    self.c.buf += keep
                    mail, rcpts, accepted = False, 0, 0
                elif verb in (b"MAIL", b"AUTH") and self.lcfg.get("require_tls") and not self.tls:
                    self.send("530 5.7.0 Must issue a STARTTLS command first")
                elif verb == b"AUTH":
                    if not self.tls:
                        self.send("503 5.5.1 AUTH not available before TLS")
                        continue
                    up = self.upstream()
                    if "log_auth" in BUGS:
                        print(f"AUTH command: {line!r}", file=sys.stderr, flush=True)
                    r = up.cmd(line)
                    while r[:3] == b"334":
                        self.send(r)
                        resp, _ = self.c.line(ct)
                        r = up.cmd(resp.rstrip(b"\r\n"))
                    self.send(r)
                elif verb == b"MAIL":
                    m = re.search(rb"(?i)\bSIZE=(\S+)", line)
                    if m:
                        try:
                            sz = int(m.group(1))
                        except ValueError:
                            self.send("501 5.5.4 bad SIZE")
                            continue
                        if sz < 0:
                            self.send("501 5.5.4 bad SIZE")
                            continue
                        if sz > self.lim["max_message_size"]:
                            self.send("552 5.3.4 Message too big")
                            continue
                    r = self.upstream().cmd(line)
                    self.send(r)
                    mail = r[:1] == b"2"
                    rcpts = accepted = 0
                elif verb == b"RCPT":
                    if not mail:
                        self.send("503 5.5.1 need MAIL")
                        continue
                    if rcpts >= self.lim["max_recipients"]:
                        self.send("452 4.5.3 Too many recipients")
                        continue
                    rcpts += 1
                    r = self.upstream().cmd(line)
                    accepted += r[:1] == b"2"
                    self.send(r)
                elif verb == b"DATA":
                    if not accepted:
                        self.send("554 5.5.1 no valid recipients")
                        continue
                    self.send("354 go ahead")
                    msg, err = self.read_data()
                    if err:
                        self.send(err)
                        if err.startswith("521"):
                            return
                    else:
                        self.send(self.forward(msg))
                    mail = False
                elif verb == b"BDAT":
                    parts = line.split()
                    n = int(parts[1])
                    chunk = self.c.exact(n, self.lim["data_timeout"])
                    bdat += chunk
                    if len(parts) > 2 and parts[2].upper() == b"LAST":
                        msg = bytes(bdat)
                        bdat.clear()
                        if re.search(rb"\r(?!\n)|(?<!\r)\n", msg):
                            self.send("521 5.5.2 bare CR or LF")
                            return
                        self.send(self.forward(msg))
                        mail = False
                    else:
                        self.send(f"250 2.0.0 {n} octets")
                elif verb == b"RSET":
                    mail = False
                    if self.up.ready.is_set() and not self.up.error:
                        self.upstream().cmd(b"RSET")
                    self.send("250 2.0.0 Ok")
                elif verb == b"NOOP":
                    self.send("250 2.0.0 Ok")
                elif verb == b"VRFY":
                    self.send("252 2.5.0 Cannot VRFY")
                elif verb == b"QUIT":
                    self.send("221 2.0.0 Bye")
                    return
                else:
                    self.send("502 5.5.1 unrecognized")
            except Fail as f:
                self.send(f.reply)

    def read_data(self) -> tuple[bytes, str | None]:
        out = bytearray()
        bad = False
        too_big = False
        prev_crlf = True
        while True:
            ln, _ = self.c.line(self.lim["data_timeout"], 1 << 30)
            if prev_crlf and ln == b".\r\n":
                break
            if re.search(rb"\r(?!\n)|(?<!\r)\n", ln) and "no_bare_check" not in BUGS:
                return b"", "521 5.5.2 bare CR or LF in DATA"
            if prev_crlf and ln.startswith(b"."):
                ln = ln[1:]
            prev_crlf = ln.endswith(b"\r\n")
            if not too_big:
                out += ln
                if len(out) > self.lim["max_message_size"]:
                    too_big = True
                    out = bytearray()
        if too_big:
            return b"", "552 5.3.4 Message too big"
        return bytes(out), None

    def forward(self, msg: bytes) -> bytes:
        up = self.upstream()
        try:
            r = up.cmd(b"DATA")
            if r[:3] != b"354":
                return r
            stuffed = b"".join((b"." + l if l.startswith(b".") and "no_stuffing" not in BUGS else l)
                               for l in msg.splitlines(keepends=True))
            up.s.send(stuffed + b".\r\n")
            return up.s.reply(self.lim["upstream_timeout"])[1]
        except (socket.timeout, Closed):
            up.error = "451 4.4.2 upstream lost"
            if "ok_on_timeout" in BUGS:
                return b"250 2.0.0 Ok\r\n"
            return b"451 4.4.2 No reply from upstream after end of data\r\n"


class Server:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.lim = cfg["limits"]
        self.active = 0
        self.lock = threading.Lock()

    def serve(self) -> None:
        for l in self.cfg["listen"]:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            host, port = l["address"].rsplit(":", 1)
            s.bind((host, int(port)))
            s.listen(128)
            print(f"sealgate: listening on {host}:{s.getsockname()[1]} (tls={l['tls']})", flush=True)
            threading.Thread(target=self.accept, args=(s, l), daemon=True).start()
        signal.sigwait([signal.SIGTERM, signal.SIGINT])

    def accept(self, s, l) -> None:
        while True:
            c, _ = s.accept()
            with self.lock:
                over = self.active >= self.lim["max_connections"]
                if not over:
                    self.active += 1
            if over:
                try:
                    c.sendall(b"421 4.7.0 Too many connections\r\n")
                finally:
                    c.close()
                continue
            threading.Thread(target=self.run, args=(c, l), daemon=True).start()

    def run(self, c, l) -> None:
        try:
            Session(self, c, l).run()
        finally:
            with self.lock:
                self.active -= 1


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    if len(sys.argv) != 4 or sys.argv[1] != "serve" or sys.argv[2] != "--config":
        sys.exit("usage: refproxy.py serve --config FILE")
    with open(sys.argv[3], "rb") as f:
        Server(tomllib.load(f)).serve()
