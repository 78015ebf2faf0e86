"""Throwaway test PKI built with the openssl CLI.

make_pki(dir) -> dict of paths:
  ca, ca_key                    test CA (CN=Sealgate Test CA)
  server, server_key            localhost + IP 127.0.0.1, signed by the CA (serverAuth)
  expired, expired_key          localhost + 127.0.0.1, signed by the CA, valid 2020-2021 only
  wrong_host, wrong_host_key    wrong.example only, signed by the CA
  self_signed, self_signed_key  localhost + 127.0.0.1, self-signed (not under the CA)
  other_ca                      an unrelated CA (trust anchor that does NOT sign the server)
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

_EXT = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_CA_CNF = """[ ca ]
default_ca = testca
[ testca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = pol
copy_extensions = none
unique_subject = no
[ pol ]
commonName = supplied
"""


def _run(*args: str, cwd: Path) -> None:
    r = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")


def _key(path: Path, cwd: Path) -> None:
    _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(path), cwd=cwd)
    os.chmod(path, 0o644)  # readable by other test processes (e.g. postfix); throwaway key


def _ca(d: Path, name: str, cn: str) -> None:
    _key(d / f"{name}.key", d)
    _run("openssl", "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "3650",
         "-subj", f"/CN={cn}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash",
         "-out", f"{name}.pem", cwd=d)


def _leaf(d: Path, name: str, cn: str, san: str, *, days: int = 825,
          startdate: str | None = None, enddate: str | None = None) -> None:
    _key(d / f"{name}.key", d)
    _run("openssl", "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
         "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(_EXT.format(san=san))
    if startdate or enddate:
        # openssl 3.0's "x509 -req" cannot backdate; use the "ca" command for that
        cadir = d / "cadb"
        (cadir / "newcerts").mkdir(parents=True, exist_ok=True)
        (cadir / "index.txt").touch()
        if not (cadir / "serial").exists():
            (cadir / "serial").write_text("1000\n")
        (cadir / "ca.cnf").write_text(_CA_CNF.format(dir=cadir))
        _run("openssl", "ca", "-batch", "-config", str(cadir / "ca.cnf"),
             "-cert", "ca.pem", "-keyfile", "ca.key", "-in", f"{name}.csr",
             "-startdate", startdate, "-enddate", enddate,
             "-extfile", f"{name}.ext", "-notext", "-out", f"{name}.pem", cwd=d)
    else:
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-sha256", "-days", str(days), "-extfile", f"{name}.ext",
             "-out", f"{name}.pem", cwd=d)


def make_pki(directory: str | os.PathLike) -> dict:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    _ca(d, "ca", "Sealgate Test CA")
    _ca(d, "other_ca", "Unrelated Test CA")
    san = "DNS:localhost,IP:127.0.0.1"
    _leaf(d, "server", "localhost", san)
    _leaf(d, "expired", "localhost", san, startdate="20200101000000Z", enddate="20210101000000Z")
    _leaf(d, "wrong_host", "wrong.example", "DNS:wrong.example")
    # self-signed leaf for localhost, not under the test CA
    _key(d / "self_signed.key", d)
    (d / "self_signed.ext").write_text(_EXT.format(san=san).replace("authorityKeyIdentifier = keyid\n", ""))
    _run("openssl", "req", "-x509", "-new", "-key", "self_signed.key", "-sha256", "-days", "825",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "extendedKeyUsage=serverAuth",
         "-out", "self_signed.pem", cwd=d)
    out = {"dir": str(d), "ca": str(d / "ca.pem"), "ca_key": str(d / "ca.key"),
           "other_ca": str(d / "other_ca.pem")}
    for n in ("server", "expired", "wrong_host", "self_signed"):
        out[n] = str(d / f"{n}.pem")
        out[f"{n}_key"] = str(d / f"{n}.key")
    # full chain variant (leaf + CA) for servers that should present the chain
    (d / "server_chain.pem").write_text((d / "server.pem").read_text() + (d / "ca.pem").read_text())
    out["server_chain"] = str(d / "server_chain.pem")
    return out


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(make_pki(sys.argv[1]), indent=2))
