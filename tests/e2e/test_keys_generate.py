"""keys/generate.sh, the one generator of the demo and test PKIs: it must leave nothing running.
A gpg-agent that outlives it (one per call, and the suite calls it many times) is a leftover
that later runs inherit."""
import os
import shutil
import subprocess

import pytest

from support import REPO

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None or shutil.which("openssl") is None,
                                reason="keys/generate.sh needs gpg and openssl")


def gpg_agents_under(path: str) -> list:
    """Live gpg-agent processes whose command line names a home under `path`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"gpg-agent") and any(path.encode() in a for a in args):
            found.append(int(pid))
    return found


def test_the_demo_profile_leaves_no_gpg_agent_running(tmp_path):
    work = tmp_path / "tmp"
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(work)}
    subprocess.run(["bash", str(REPO / "keys" / "generate.sh"), "--profile", "demo", str(tmp_path / "keys")],
                   check=True, capture_output=True, timeout=600, env=env)
    assert (tmp_path / "keys" / "alice-openpgp.asc").exists()
    assert gpg_agents_under(str(work)) == [], "keys/generate.sh left a gpg-agent running"
