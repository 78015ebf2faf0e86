"""Behind a load balancer: listen.proxy_protocol = "v1" | "v2" with proxy_from. The real
client named by the PROXY header is what allow_from, the logs and XCLIENT use; a header from
an address not in proxy_from, a malformed or missing one, closes the connection.

Raw clients write the header themselves (v1 text, v2 binary with TLVs); a real HAProxy from
Debian is used when installed.
"""
from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
import time

import pytest

from support.clients import RawSMTP, dot_stuff

XCLIENT_ATTRS = ["NAME", "ADDR", "PROTO", "HELO", "PORT", "LOGIN", "DESTADDR", "DESTPORT"]
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src="192.0.2.7", dst="127.0.0.1", sport=4711, dport=25, proto="TCP4") -> bytes:
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="192.0.2.7", dst="127.0.0.1", sport=4711, dport=25, tlvs=(), command=0x21) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", sport, dport)
    for t, v in tlvs:
        body += struct.pack("!BH", t, len(v)) + v
    return V2_SIG + struct.pack("!BBH", command, family, len(body)) + body


def proxied(relay_factory, version, proxy_from=("127.0.0.1",), allow_from=None, **upstream):
    upstream.setdefault("xclient", XCLIENT_ATTRS)
    listen = {"proxy_protocol": version, "proxy_from": list(proxy_from)}
    if allow_from is not None:
        listen["allow_from"] = allow_from
    return relay_factory(upstream=upstream, upstream_cfg={"forward_client": "xclient"}, listen=[listen])


def deliver(c):
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    assert c.cmd("RCPT TO:<b@y.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(b"Subject: p\r\n\r\nhi\r\n"))
    assert c.reply().code == 250
    c.quit()


@pytest.mark.parametrize("header", [v1(), v2(tlvs=[(0x02, b"mx.example"), (0x04, b"")])], ids=["v1", "v2"])
def test_the_header_names_the_client_for_xclient_and_logs(relay_factory, header):
    r = proxied(relay_factory, "v1" if header.startswith(b"PROXY") else "v2")
    c = r.client()
    c.send(header)
    c.start(tls=True, name="behind.example")
    deliver(c)
    assert r.up.wait_closed()
    (s,) = r.up.sessions
    x = s.xclient[0]
    assert (x["ADDR"], x["PORT"], x["DESTADDR"], x["DESTPORT"]) == ("192.0.2.7", "4711", "127.0.0.1", "25"), x
    assert "192.0.2.7:4711" in r.sg.stderr_text()


def test_ipv6_client_in_v1_and_v2(relay_factory):
    for version, header in (("v1", v1("2001:db8::7", "2001:db8::25", 1, 587, "TCP6")),
                            ("v2", v2("2001:db8::7", "2001:db8::25", 1, 587))):
        r = proxied(relay_factory, version)
        c = r.client()
        c.send(header)
        c.start(tls=True)
        deliver(c)
        assert r.up.wait_closed()
        x = r.up.sessions[0].xclient[0]
        assert (x["ADDR"], x["DESTADDR"], x["DESTPORT"]) == ("IPV6:2001:db8::7", "IPV6:2001:db8::25", "587"), x


def test_local_and_unknown_keep_the_connections_own_address(relay_factory):
    for version, header in (("v1", b"PROXY UNKNOWN\r\n"), ("v2", v2(command=0x20))):
        r = proxied(relay_factory, version)
        c = r.client()
        c.send(header)
        c.start(tls=True)
        deliver(c)
        assert r.up.wait_closed()
        assert r.up.sessions[0].xclient[0]["ADDR"] == "127.0.0.1"


def test_allow_from_judges_the_real_client(relay_factory):
    r = proxied(relay_factory, "v1", allow_from=["192.0.2.0/24"])
    c = r.client()
    c.send(v1(src="192.0.2.7"))
    assert c.greeting().code == 220
    c.quit()
    c = r.client()
    c.send(v1(src="198.51.100.1"))
    g = c.greeting()
    assert (g.code, g.enhanced) == (554, "5.7.1"), g
    c.expect_closed()
    assert r.up.sessions == []


@pytest.mark.parametrize("version,header", [
    ("v1", b"EHLO x.example\r\n"),                                   # no header at all
    ("v1", b"PROXY TCP4 192.0.2.7 127.0.0.1 4711\r\n"),               # a field missing
    ("v1", b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 25\n"),              # bare LF
    ("v1", b"PROXY UNKNOWN " + b"a" * 200 + b"\r\n"),                 # over 107 octets
    ("v1", v2()),                                                     # v2 on a v1 listener
    ("v2", v1()),                                                     # v1 on a v2 listener
    ("v2", v2()[:12] + b"\x21\x12" + v2()[14:]),                       # UDP
    ("v2", V2_SIG + b"\x21\x11\xff\xff"),                             # 64 KiB announced
    ("v2", v2(tlvs=[(0x02, b"x")])[:-3] + b"\x00\x05x"),               # TLV overruns the header
], ids=["none", "short", "lf", "long", "v2-on-v1", "v1-on-v2", "udp", "huge", "tlv"])
def test_a_malformed_header_closes_without_a_greeting(relay_factory, version, header):
    r = proxied(relay_factory, version)
    c = r.client(timeout=5)
    c.send(header)
    got = c.expect_closed(timeout=5)
    assert not got.startswith(b"220"), got
    assert r.up.sessions == []
    assert r.sg.alive()


def test_a_header_from_outside_proxy_from_closes(relay_factory):
    r = proxied(relay_factory, "v1", proxy_from=["10.0.0.0/8"])
    c = r.client(timeout=5)
    c.send(v1())
    assert c.expect_closed(timeout=5) == b""
    assert "not in proxy_from" in r.sg.stderr_text()
    assert r.up.sessions == []


def test_a_stalled_header_is_cut(relay_factory):
    # command_timeout bounds the header read (limited to 60 s; 2 s here)
    r2 = relay_factory(upstream={"xclient": XCLIENT_ATTRS}, upstream_cfg={"forward_client": "xclient"},
                       listen=[{"proxy_protocol": "v1", "proxy_from": ["127.0.0.1"]}],
                       limits={"command_timeout": 2})
    c = r2.client(timeout=10)
    c.send(b"PROXY TCP4 19")
    started = time.monotonic()
    c.expect_closed(timeout=8)
    assert time.monotonic() - started < 6


# --------------------------------------------------------------------------- HAProxy
def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
@pytest.mark.parametrize("send_proxy,version", [("send-proxy", "v1"), ("send-proxy-v2", "v2")])
def test_behind_a_real_haproxy(relay_factory, tmp_path, send_proxy, version):
    # HAProxy connects from 127.0.0.1 (proxy_from); the client comes from 127.0.0.2, the only
    # address allow_from lets in.
    r = proxied(relay_factory, version, allow_from=["127.0.0.2"])
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp
    bind 127.0.0.1:{port}
    default_backend sealgate
backend sealgate
    server sg 127.0.0.1:{r.port} {send_proxy}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        # (that probe connection reaches sealgate as a client from 127.0.0.1: refused)
        c = RawSMTP("127.0.0.1", port, ca_file=r.pki["ca"], source="127.0.0.2")
        c.start(tls=True, name="via.haproxy")
        client_port = c.sock.getsockname()[1]
        deliver(c)
        assert r.up.wait_for(lambda: any(s.xclient for s in r.up.sessions))
        (x,) = [s.xclient[0] for s in r.up.sessions if s.xclient]
        assert (x["ADDR"], x["PORT"], x["DESTPORT"]) == ("127.0.0.2", str(client_port), str(port)), x
        assert len(r.up.messages) == 1
        # A direct client (not through HAProxy, so without a header) never gets a greeting.
        d = RawSMTP("127.0.0.1", r.port, timeout=5)
        d.send(b"EHLO direct\r\n")
        assert not d.expect_closed(timeout=5).startswith(b"220")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
