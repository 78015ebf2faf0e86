#!/usr/bin/env python3
"""The cost of the durable path (issue 10): messages/s when every message goes through the queue
vs the fast path (every copy accepted on the client's session), and fsyncs per message.

    python3 tests/e2e/bench_queue.py [messages] [concurrency]     # default 200 8

Each message goes to bob@example.org (S/MIME) and nokey@example.org (plain): two copies. Fast
path: both copies accepted. Durable path: the plain copy's first try gets 451, so the client's
250 waits for the queue write (2 files + the directory fsync'd), and the queue delivers it at
its first retry (1 s later). Throughput is measured at the client (all 250s received); the
queue's delivery is waited for (and counted) separately. fsyncs are counted with
`strace -f -c` in a second run of each mode (strace slows the process: its throughput is not
reported). The scripted upstream (Python) is the same in both modes; a debug build of sealgate
unless SEALGATE_BIN says otherwise. The first line is the disk's own fsync rate: the durable
path does 3 fsyncs before the client's 250 and 1 when the entry is removed, so its rate is
bounded by about that rate / 4 whatever the fast path does.
"""
from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import SEALGATE_BIN, Sealgate, build_config  # noqa: E402
from support.clients import client_ssl_context  # noqa: E402
from support.pki import make_pki, make_smime_pki  # noqa: E402
from support.upstream import Upstream  # noqa: E402


def message(n: int) -> bytes:
    return (b"From: Alice <alice@example.org>\r\nTo: bob@example.org, nokey@example.org\r\n"
            b"Subject: bench " + str(n).encode() + b"\r\n\r\n" + b"x" * 4000 + b"\r\n")


def run(mode: str, n: int, conc: int, pki: dict, smime: dict, strace: bool) -> dict:
    first_try: set = set()

    def script(txn):
        if mode == "durable" and txn.rcpt_addrs == [b"nokey@example.org"]:
            key = txn.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
            if key not in first_try:
                first_try.add(key)
                return "451 4.3.0 not now"
        return "250 2.0.0 ok"

    up = Upstream({"cert": pki["server"], "key": pki["server_key"], "final_reply": script,
                   "idle_timeout": 60}).start()
    wd = Path(tempfile.mkdtemp(prefix=f"sealgate-bench-{mode}-"))
    cfg = build_config(wd, pki, up.address, limits={"upstream_timeout": 30},
                       extra={"policy": {"encrypt": "opportunistic", "sign": False},
                              "queue": {"retry_initial": 1, "retry_max": 2, "scan_interval": 1,
                                        "concurrency": 8}})
    from conftest import to_toml
    (wd / "k.toml").write_text(to_toml(cfg))
    subprocess.run([SEALGATE_BIN, "keys", "import", smime["rsa1.pem"], "--config", str(wd / "k.toml")],
                   check=True, capture_output=True)
    env = {"RUST_LOG": "warn"}
    sg = Sealgate(cfg, wd, env=env)
    tracer = None
    if strace:
        tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-p", str(sg.proc.pid),
                                   "-o", str(wd / "strace.txt")], stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    codes: list = []
    lock = threading.Lock()
    todo = list(range(n))

    def worker():
        ctx = client_ssl_context(pki["ca"])
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            with smtplib.SMTP("127.0.0.1", sg.port, timeout=60) as s:
                s.starttls(context=ctx)
                s.ehlo()
                s.mail("alice@example.org")
                s.rcpt("bob@example.org")
                s.rcpt("nokey@example.org")
                code, _ = s.data(message(i))
            with lock:
                codes.append(code)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    acked_in = time.monotonic() - started
    qdir = wd / "queue"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(p.suffix == ".json" for p in qdir.iterdir()):
        time.sleep(0.2)
    drained_in = time.monotonic() - started
    delivered = sum(len(t.rcpt_addrs) for t in up.messages if str(t.final_reply).startswith("250"))
    sg.stop()
    fsyncs = None
    if tracer:
        tracer.wait(10)
        text = (wd / "strace.txt").read_text()
        fsyncs = sum(int(m.group(1)) for m in re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?f(?:data)?sync",
                                                          text, re.M))
    up.stop()
    shutil.rmtree(wd, ignore_errors=True)
    assert codes.count(250) == n, codes
    assert delivered == 2 * n, delivered
    return {"acked_s": acked_in, "drained_s": drained_in, "fsyncs": fsyncs}


def disk_fsyncs_per_s(directory: str, n: int = 200) -> float:
    """The disk's own rate, for reading the durable figure: a 4 KB file written and fsync'd,
    then its directory fsync'd, n times in one thread."""
    d = tempfile.mkdtemp(dir=directory)
    started = time.monotonic()
    for i in range(n):
        with open(f"{d}/{i}", "wb") as f:
            f.write(b"x" * 4000)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.monotonic() - started
    shutil.rmtree(d, ignore_errors=True)
    return 2 * n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    pki_dir, smime_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    pki, smime = make_pki(pki_dir), make_smime_pki(smime_dir)
    rates = {}
    try:
        print(f"disk ({tempfile.gettempdir()}): {disk_fsyncs_per_s(tempfile.gettempdir()):.0f} fsyncs/s, one thread",
              flush=True)
        for mode in ("fast", "durable"):
            r = run(mode, n, conc, pki, smime, strace=False)
            s = run(mode, max(20, n // 10), conc, pki, smime, strace=True)
            per = s["fsyncs"] / max(20, n // 10)
            rates[mode] = n / r["acked_s"]
            print(f"{mode:8s} {n} messages x 2 copies, {conc} clients: {rates[mode]:.1f} msg/s acknowledged "
                  f"({r['acked_s']:.2f} s), all delivered after {r['drained_s']:.2f} s; "
                  f"fsync+fdatasync per message: {per:.2f}", flush=True)
        print(f"durable / fast: {rates['durable'] / rates['fast']:.2f}")
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
        shutil.rmtree(smime_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
