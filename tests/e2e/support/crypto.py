"""Independent decryptors and verifiers for the end-to-end tests: OpenSSL's `cms`, GnuPG's
`gpgsm` and `gpg`. Nothing here uses sealgate's own code."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional


def run(args: list, data: bytes = b"", env: Optional[dict] = None, check: bool = True,
        timeout: int = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(args, input=data, capture_output=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}):\n{p.stderr.decode(errors='replace')}")
    return p


def cms_decrypt(message: bytes, cert: str, key: str) -> bytes:
    return run(["openssl", "cms", "-decrypt", "-recip", cert, "-inkey", key], message).stdout


def cms_verify(message: bytes, ca: str) -> bytes:
    """Verifies an S/MIME signed message (multipart/signed or opaque); returns the content."""
    return run(["openssl", "cms", "-verify", "-CAfile", ca], message).stdout


def cms_recipient_count(message: bytes) -> int:
    out = run(["openssl", "cms", "-cmsout", "-print", "-inform", "SMIME"], message).stdout.decode()
    return out.count("d.ktri:") + out.count("d.kari:")


class Gpg:
    """A throwaway GNUPGHOME."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="sealgate-gpg-")
        os.chmod(self.home, 0o700)
        self.env = dict(os.environ, GNUPGHOME=self.home)

    def gpg(self, *args: str, data: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        return run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                    *args], data, env=self.env, check=check)

    def generate(self, uid: str) -> str:
        """Ed25519 primary (sign) + Cv25519 encryption subkey; returns the fingerprint."""
        self.gpg("--quick-gen-key", uid, "ed25519", "sign", "never")
        out = self.gpg("--with-colons", "--list-keys", uid).stdout.decode()
        fpr = next(l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:"))
        self.gpg("--quick-add-key", fpr, "cv25519", "encr", "never")
        return fpr

    def encrypt(self, recipient: str, data: bytes) -> bytes:
        return self.gpg("--armor", "--trust-model", "always", "--encrypt", "-r", recipient,
                        data=data).stdout

    def export(self, fpr: str, secret: bool = False) -> bytes:
        return self.gpg("--armor", "--export-secret-keys" if secret else "--export", fpr).stdout

    def import_(self, data: bytes) -> None:
        self.gpg("--import", data=data)

    def decrypt(self, data: bytes) -> tuple[bytes, str]:
        """Returns (plaintext, status lines)."""
        p = self.gpg("--status-fd", "2", "--decrypt", data=data, check=False)
        return p.stdout, p.stderr.decode(errors="replace")

    def verify_detached(self, signed: bytes, signature: bytes) -> str:
        with tempfile.TemporaryDirectory() as d:
            s, g = Path(d) / "data", Path(d) / "sig.asc"
            s.write_bytes(signed)
            g.write_bytes(signature)
            p = self.gpg("--status-fd", "2", "--verify", str(g), str(s), check=False)
            return p.stderr.decode(errors="replace")

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
