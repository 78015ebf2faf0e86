"""Who may connect to a listener: allow_from (554 at connect for others), and check-config
refusing sign_without_auth without it."""
from __future__ import annotations

import subprocess

from conftest import SEALGATE_BIN, to_toml
from support.clients import RawSMTP


def test_a_client_outside_allow_from_gets_554_and_nothing_reaches_the_upstream(relay_factory):
    r = relay_factory(listen=[{"allow_from": ["10.0.0.0/8", "::1"]}])
    c = RawSMTP("127.0.0.1", r.port, timeout=5)
    g = c.reply()
    assert (g.code, g.enhanced) == (554, "5.7.1"), g
    c.expect_closed()
    assert r.up.sessions == []
    assert "allow_from" in r.sg.stderr_text() and "127.0.0.1" in r.sg.stderr_text()


def test_a_client_inside_allow_from_is_served(relay_factory):
    r = relay_factory(listen=[{"allow_from": ["192.0.2.0/24", "127.0.0.0/8"]}])
    c = r.session(tls=True)
    assert c.cmd("MAIL FROM:<a@x.test>").code == 250
    c.quit()


def test_check_config_refuses_sign_without_auth_without_allow_from(relay, tmp_path):
    cfg = dict(relay.sg.config)
    cfg["listen"] = [dict(cfg["listen"][0], sign_without_auth=True, allow_from=None)]
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(cfg))
    res = subprocess.run([SEALGATE_BIN, "check-config", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "listen[0].sign_without_auth: needs allow_from" in res.stderr, res.stderr
    cfg["listen"] = [dict(cfg["listen"][0], sign_without_auth=True, allow_from=["127.0.0.1"])]
    bad.write_text(to_toml(cfg))
    ok = subprocess.run([SEALGATE_BIN, "check-config", "--config", str(bad)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
