"""The pure routing rules: modes, the fallback plan, the circuit breaker, terminal
events, the intercept host list, the CA, the PAC file and `setup --proxy`."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from agent import pac as pac_module
from agent import trustca
from agent.config import Settings
from agent.core import ca as ca_core
from agent.core.dialects import Dialect, Operation, Provider
from agent.core.routing import (
    INTERCEPT_HOSTS,
    CircuitBreaker,
    Mode,
    Scheme,
    chain_name,
    classify_intercepted,
    host_listed,
    retryable_status,
    terminal_error,
)
from agent.forwarder import build_router


def router(**settings: object):
    return build_router(Settings(_env_file=None, **settings))  # type: ignore[call-arg]


# -- modes and plans --------------------------------------------------------------


def test_modes_default_per_provider_and_bundle_wins():
    r = router(upstream_mode="direct", upstream_modes={"anthropic": "passthrough"}, gateway_url="https://gw.example/")
    assert r.mode(Provider.ANTHROPIC) is Mode.PASSTHROUGH
    assert r.mode(Provider.OPENAI) is Mode.DIRECT
    assert r.mode(Provider.OPENAI, {"default": "gateway"}) is Mode.GATEWAY
    assert r.mode(Provider.ANTHROPIC, {"anthropic": "bogus"}) is Mode.PASSTHROUGH  # unknown values ignored
    assert r.primary(Provider.OPENAI, Mode.GATEWAY).url("/v1/responses") == "https://gw.example:443/v1/responses"
    passthrough = r.primary(Provider.ANTHROPIC, Mode.PASSTHROUGH)
    assert passthrough.scheme is Scheme.CLIENT and passthrough.upstream.host == "api.anthropic.com"


def test_gateway_mode_without_gateway_has_no_primary():
    assert router().primary(Provider.OPENAI, Mode.GATEWAY) is None


def test_plan_primary_first_then_chain_of_the_same_dialect_capped():
    r = router(gateway_url="https://gw.example", azure_openai_base_url="https://res.openai.azure.com/openai")
    primary = r.primary(Provider.OPENAI, Mode.DIRECT)
    plan = r.plan(primary, Dialect.OPENAI_CHAT, ["mp_azure", "gateway", "anthropic", "openai", "nope"], None, 0)
    assert [t.name for t in plan.attempts] == ["openai", "azure_openai", "gateway"]
    assert plan.chained and plan.positions == (0, 1, 2)
    capped = r.plan(primary, Dialect.OPENAI_CHAT, ["azure", "gateway"], 2, 0)
    assert [t.name for t in capped.attempts] == ["openai", "azure_openai"]
    # Anthropic calls cannot go to Azure: no chain, mitmproxy dials the provider itself.
    anthropic = r.plan(r.primary(Provider.ANTHROPIC, Mode.DIRECT), Dialect.ANTHROPIC, ["azure"], None, 0)
    assert not anthropic.chained and [t.name for t in anthropic.attempts] == ["anthropic"]


def test_azure_target_uses_api_key_and_api_version():
    r = router(azure_openai_base_url="https://res.openai.azure.com/openai", azure_openai_api_version="2025-04-01-preview")
    azure = r.targets["azure_openai"]
    assert azure.auth_headers(Provider.OPENAI, "k") == {"api-key": "k"}
    assert azure.url("/v1/chat/completions") == (
        "https://res.openai.azure.com:443/openai/v1/chat/completions?api-version=2025-04-01-preview"
    )


def test_chain_names():
    assert chain_name("mp_anthropic") == "anthropic"
    assert chain_name("azure") == chain_name("MP_AZURE") == "azure_openai"
    assert chain_name("google") == "gemini"


@pytest.mark.parametrize(("status", "retry"), [(500, True), (502, True), (529, True), (429, True), (404, True),
                                               (400, False), (401, False), (403, False), (422, False), (200, False)])
def test_retryable_statuses(status, retry):
    assert retryable_status(status) is retry


# -- circuit breaker (clock passed in) ------------------------------------------------


def test_breaker_opens_at_threshold_within_window_and_half_opens_after_cooldown():
    b = CircuitBreaker(threshold=3, window_s=10, cooldown_s=30)
    assert not b.failure("a", 0) and not b.failure("a", 5)
    assert not b.failure("a", 11)  # the first one left the window
    assert b.failure("a", 12)
    assert b.state("a", 12) == "open" and not b.allows("a", 41.9)
    assert b.allows("a", 42) and b.state("a", 42) == "half_open"
    assert b.failure("a", 42)  # the trial failed: open for another cool-down
    assert not b.allows("a", 71) and b.allows("a", 72)
    b.success("a")
    assert b.state("a", 72) == "closed" and b.to_json(72) == {}


def test_plan_skips_open_circuits_and_counts_them_as_passed_over():
    r = router(gateway_url="https://gw.example", circuit_threshold=1)
    r.breaker.failure("anthropic", 100.0)
    plan = r.plan(r.primary(Provider.ANTHROPIC, Mode.DIRECT), Dialect.ANTHROPIC, ["gateway"], None, 101.0)
    assert [t.name for t in plan.attempts] == ["gateway"] and plan.positions == (1,) and plan.skipped == ("anthropic",)
    r.breaker.failure("gateway", 100.0)
    assert r.plan(r.primary(Provider.ANTHROPIC, Mode.DIRECT), Dialect.ANTHROPIC, ["gateway"], None, 101.0).attempts == ()


# -- terminal events -------------------------------------------------------------------


def test_terminal_events_parse_as_each_dialects_error():
    anthropic = terminal_error(Dialect.ANTHROPIC, "cut")
    assert anthropic.startswith(b"event: error\n") and json.loads(anthropic.split(b"data: ")[1])["type"] == "error"
    chat = terminal_error(Dialect.OPENAI_CHAT, "cut")
    assert chat.endswith(b"data: [DONE]\n\n") and json.loads(chat.split(b"\n\n")[0][6:])["error"]["message"] == "cut"
    responses = terminal_error(Dialect.OPENAI_RESPONSES, "cut", sequence=7)
    assert json.loads(responses.split(b"data: ")[1])["sequence_number"] == 7
    gemini = terminal_error(Dialect.GEMINI, "cut")
    assert json.loads(gemini[6:])["error"]["status"] == "UNAVAILABLE"
    array = b'[{"candidates":[]}' + terminal_error(Dialect.GEMINI, "cut", gemini_array=True)
    assert json.loads(array)[1]["error"]["code"] == 502


# -- intercept host list -----------------------------------------------------------------


def test_host_list_exact_and_wildcard():
    assert host_listed("API.Anthropic.com.", INTERCEPT_HOSTS)
    assert not host_listed("anthropic.com", INTERCEPT_HOSTS)
    assert not host_listed("api.anthropic.com.evil.example", INTERCEPT_HOSTS)
    assert host_listed("eu.llm.corp.example", ["*.llm.corp.example"])
    assert not host_listed("llm.corp.example.org", ["*.llm.corp.example"])


def test_intercepted_endpoints_from_host_and_path():
    codex = classify_intercepted("chatgpt.com", "POST", "/backend-api/codex/responses", {}, False)
    assert codex is not None and codex.dialect is Dialect.OPENAI_RESPONSES
    messages = classify_intercepted("api.anthropic.com", "POST", "/v1/messages", {}, False)
    assert messages is not None and messages.operation is Operation.GENERATE
    assert classify_intercepted("api.anthropic.com", "GET", "/api/oauth/profile", {}, False) is None
    assert classify_intercepted("api.openai.com", "GET", "/v1/models", {}, False) is None


# -- the CA --------------------------------------------------------------------------------


def test_ca_is_named_for_product_and_machine_and_is_a_ca():
    made = ca_core.generate("ada-laptop", now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    cert = made.cert
    assert made.common_name == "Governor local CA (ada-laptop)"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Governor"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc.year == 2035


def test_ca_files_unique_per_data_dir_private_and_stable(tmp_path):
    one = trustca.ensure_ca(tmp_path / "one", machine="m")
    two = trustca.ensure_ca(tmp_path / "two", machine="m")
    assert one.load().cert_pem != two.load().cert_pem
    assert one.load().key_pem != two.load().key_pem
    assert stat.S_IMODE(os.stat(one.key_and_cert).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(one.confdir).st_mode) == 0o700
    first = one.key_and_cert.read_bytes()
    assert trustca.ensure_ca(tmp_path / "one").key_and_cert.read_bytes() == first  # never replaced
    assert one.cert.read_bytes() == one.load().cert_pem and b"PRIVATE KEY" not in one.cert.read_bytes()
    assert one.bundle.read_bytes().endswith(one.load().cert_pem)
    assert one.bundle.read_bytes().count(b"BEGIN CERTIFICATE") > 1  # the system's CAs too


def test_ca_replaces_a_default_mitmproxy_ca(tmp_path):
    conf = tmp_path / "mitmproxy"
    conf.mkdir()
    (conf / "mitmproxy-ca.pem").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nmitmproxy\n")
    files = trustca.ensure_ca(tmp_path, machine="m")
    assert files.load().common_name == "Governor local CA (m)"


def test_trust_steps_per_os(tmp_path):
    files = trustca.ensure_ca(tmp_path / "d", machine="m")
    made = files.load()
    home = tmp_path / "home"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    mac = trustca.install_steps("Darwin", files, made, home)
    assert mac[0].argv == ("security", "add-trusted-cert", "-r", "trustRoot", "-k",
                           str(home / "Library/Keychains/login.keychain-db"), str(files.cert))
    assert trustca.remove_steps("Darwin", files, made, home)[0].argv[:4] == ("security", "delete-certificate", "-c", made.common_name)
    win = trustca.install_steps("Windows", files, made, home)
    assert win[0].argv == ("certutil", "-user", "-addstore", "Root", str(files.cert))
    assert trustca.remove_steps("Windows", files, made, home)[0].argv[-1] == format(made.cert.serial_number, "x")
    linux = trustca.install_steps("Linux", files, made, home, trustca.LinuxStore(sudo=True))
    assert linux[0].argv == ("sudo", "install", "-m", "0644", str(files.cert), "/usr/local/share/ca-certificates/governor-local-ca.crt")
    assert linux[1].argv == ("sudo", "update-ca-certificates")
    assert linux[2].argv[:3] == ("certutil", "-d", f"sql:{home / '.pki' / 'nssdb'}") and linux[2].optional


@pytest.mark.skipif(not Path("/usr/sbin/update-ca-certificates").exists(), reason="Debian's update-ca-certificates")
def test_trust_ca_on_linux_writes_a_throwaway_ca_bundle_and_undo_removes_it(tmp_path, capsys):
    root = tmp_path / "root"
    anchors, certs, etc, hooks = root / "local", root / "share", root / "etc-ssl-certs", root / "hooks"
    for d in (anchors, certs, etc, hooks):
        d.mkdir(parents=True)
    (certs / "other.crt").write_bytes(ca_core.generate("another-root").cert_pem)  # the distro's own roots
    conf = root / "ca-certificates.conf"
    conf.write_text("other.crt\n")
    update = ("update-ca-certificates", "--certsconf", str(conf), "--certsdir", str(certs),
              "--localcertsdir", str(anchors), "--etccertsdir", str(etc), "--hooksdir", str(hooks))
    store = trustca.LinuxStore(anchors=anchors, update=update, sudo=False)
    data_dir = tmp_path / "data"
    assert trustca.trust_ca(data_dir, home=tmp_path / "home", store=store) == 0
    made = trustca.ensure_ca(data_dir).load()
    bundle = (etc / "ca-certificates.crt").read_bytes()
    assert made.cert_pem.strip() in bundle
    out = capsys.readouterr().out
    assert "NODE_EXTRA_CA_CERTS=" in out and "SSL_CERT_FILE=" in out and made.fingerprint_sha256 in out
    assert trustca.trust_ca(data_dir, undo=True, home=tmp_path / "home", store=store) == 0
    assert not (anchors / "governor-local-ca.crt").exists()
    after = (etc / "ca-certificates.crt").read_bytes()
    assert made.cert_pem.strip() not in after and (certs / "other.crt").read_bytes().strip() in after


# -- PAC and setup --proxy ----------------------------------------------------------------


def test_pac_sends_only_listed_hosts_to_the_proxy():
    text = pac_module.pac("127.0.0.1:8788", ["api.anthropic.com", "*.corp.example"])
    assert 'host == "api.anthropic.com"' in text and 'dnsDomainIs(host, ".corp.example")' in text
    assert 'return "PROXY 127.0.0.1:8788"' in text and 'return "DIRECT"' in text


def test_setup_proxy_scopes_to_one_tool_and_undo_is_exact(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    rc = home / ".bashrc"
    rc.write_text("alias ll='ls -l'\n")
    files = trustca.ensure_ca(tmp_path / "data", machine="m")
    env = {"SHELL": "/bin/bash"}
    changed = pac_module.setup_proxy("claude", home, env, "http://127.0.0.1:8788", files)
    assert changed == [f"updated {rc}"]
    text = rc.read_text()
    assert 'claude() { HTTPS_PROXY="http://127.0.0.1:8788"' in text and f'NODE_EXTRA_CA_CERTS="{files.cert}"' in text
    assert 'command claude "$@"; }' in text
    assert pac_module.setup_proxy("claude", home, env, "http://127.0.0.1:8788", files) == []  # idempotent
    done = subprocess.run(["bash", "-c", f"source {rc}; type claude"], capture_output=True, text=True)
    assert "HTTPS_PROXY" in done.stdout
    pac_module.setup_proxy("claude", home, env, "http://127.0.0.1:8788", files, undo=True)
    assert rc.read_text() == "alias ll='ls -l'\n"
    with pytest.raises(Exception, match="Cursor"):
        pac_module.setup_proxy("cursor", home, env, "http://127.0.0.1:8788", files)
