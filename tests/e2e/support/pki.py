"""The end-to-end tests' PKIs, made by keys/generate.sh (the one generator of key material; its
profiles are described in keys/README.md).

make_pki(dir) -> dict of paths (profile tls):
  ca, ca_key                    test CA (CN=Sealgate Test CA)
  server, server_key            localhost + IP 127.0.0.1, signed by the CA (serverAuth)
  server_chain                  server + CA, for servers that present the chain
  expired, expired_key          localhost + 127.0.0.1, signed by the CA, valid 2020-2021 only
  wrong_host, wrong_host_key    wrong.example only, signed by the CA
  self_signed, self_signed_key  localhost + 127.0.0.1, self-signed (not under the CA)
  other_ca                      an unrelated CA (trust anchor that does NOT sign the server)
make_smime_pki(dir) -> {file name: path} (profile smime): CA, signer alice@example.org,
  recipients bob@example.org (rsa1), carol@example.org (rsa2), dave@example.org (ec1), ...
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support import REPO

GENERATOR = REPO / "keys" / "generate.sh"


def generate(profile: str, directory: str | os.PathLike) -> Path:
    """Runs keys/generate.sh --profile PROFILE DIRECTORY; returns the directory."""
    d = Path(directory)
    r = subprocess.run(["bash", str(GENERATOR), "--profile", profile, str(d)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{GENERATOR} --profile {profile} failed:\n{r.stdout}\n{r.stderr}")
    return d


def make_pki(directory: str | os.PathLike) -> dict:
    d = generate("tls", directory)
    out = {"dir": str(d), "ca": str(d / "ca.pem"), "ca_key": str(d / "ca.key"),
           "other_ca": str(d / "other_ca.pem"), "server_chain": str(d / "server_chain.pem")}
    for n in ("server", "expired", "wrong_host", "self_signed"):
        out[n] = str(d / f"{n}.pem")
        out[f"{n}_key"] = str(d / f"{n}.key")
    return out


def make_smime_pki(directory: str | os.PathLike) -> dict:
    d = generate("smime", directory)
    return {name: str(d / name) for name in os.listdir(d)}


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(make_pki(sys.argv[1]), indent=2))
