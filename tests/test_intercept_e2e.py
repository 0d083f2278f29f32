"""Intercept mode end to end: clients (httpx and the official SDKs) use the
agent as their HTTPS proxy and trust its CA; "providers" are TLS-wrapped fakes
on loopback whose real host names the agent resolves there (`resolve`) and
whose certificates come from a test CA the agent trusts (`upstream_ca_file`).
LLM hosts are decrypted and governed with the client's own credential; any
other host stays end-to-end encrypted."""

from __future__ import annotations

import datetime
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google import genai
from google.genai import types

from tests.fakes.providers import FakeProvider
from tests.gateway_client import call_record
from tests.harness import LOCAL_KEY, AgentProcess, free_port

CLIENT_KEY = "sk-ant-api03-the-engineers-own-key"
OAUTH = "sk-ant-oat01-subscription-login-token"
LLM_HOSTS = ["api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com"]
OTHER_HOST = "example.test"
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


# -- a test PKI: the "public" CA that signs the providers' certificates --------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("Test Public Root")).issuer_name(_name("Test Public Root"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_path = directory / "public-root.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaves = {}
    for label, hosts in {"llm": LLM_HOSTS, "other": [OTHER_HOST]}.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        leaves[label] = (cert_path, key_path)
    return ca_path, leaves


def tls_fake(cert: Path, key: Path, **settings: Any) -> FakeProvider:
    fake = FakeProvider(**settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake._server.socket = context.wrap_socket(fake._server.socket, server_side=True)
    return fake.start()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def provider(pki) -> Iterator[FakeProvider]:
    fake = tls_fake(*pki[1]["llm"])
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def origin(pki) -> Iterator[FakeProvider]:
    fake = tls_fake(*pki[1]["other"])
    yield fake
    fake.close()


def start_intercepting(data_dir: Path, pki, provider: FakeProvider, origin: FakeProvider, bundle: dict[str, Any]) -> AgentProcess:
    data_dir.mkdir(parents=True)
    (data_dir / "bundle.json").write_text(json.dumps({"revision": "1", "principal_id": "user_test", **bundle}))
    resolve = {host: f"127.0.0.1:{provider.port}" for host in LLM_HOSTS} | {OTHER_HOST: f"127.0.0.1:{origin.port}"}
    agent = AgentProcess(data_dir, env={
        "GOVERNOR_INTERCEPT_ENABLED": "true",
        "GOVERNOR_INTERCEPT_LISTEN": f"127.0.0.1:{free_port()}",
        "GOVERNOR_RESOLVE": json.dumps(resolve),
        "GOVERNOR_UPSTREAM_CA_FILE": str(pki[0]),
        "GOVERNOR_BUNDLE": str(data_dir / "bundle.json"),
    })  # fmt: skip
    agent.start()
    agent.proxy = agent.env["GOVERNOR_INTERCEPT_LISTEN"]  # type: ignore[attr-defined]
    agent.ca = data_dir / "mitmproxy" / "governor-ca.pem"  # type: ignore[attr-defined]
    return agent


@pytest.fixture(scope="module")
def agent(tmp_path_factory, pki, provider, origin) -> Iterator[AgentProcess]:
    bundle = {"models_allowed": ["claude-*", "gpt-5*", "gemini-*"]}
    proc = start_intercepting(tmp_path_factory.mktemp("intercept") / "agent", pki, provider, origin, bundle)
    yield proc
    proc.kill()


@pytest.fixture(autouse=True)
def clean(provider: FakeProvider) -> Iterator[None]:
    provider.reset()
    provider.clear()
    yield


def proxied(agent: AgentProcess, verify: Path | None = None, module: Any = httpx) -> Any:
    return module.Client(proxy=f"http://{agent.proxy}", verify=str(verify or agent.ca), timeout=10)  # type: ignore[attr-defined]


def peer_issuer(response: httpx.Response) -> str:
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    cert = x509.load_der_x509_certificate(ssl_object.getpeercert(True))
    return str(cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# -- decrypted and governed ---------------------------------------------------------------


def test_llm_host_is_decrypted_with_the_machine_ca_and_governed(agent, provider):
    with proxied(agent) as client:
        with client.stream("POST", "https://api.anthropic.com/v1/messages", headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}, json=MESSAGES) as r:
            body = r.read()
            issuer = peer_issuer(r)
    assert issuer.startswith("Governor local CA (")
    assert r.status_code == 200 and body == bytes(provider.last.sent)
    ex = provider.last
    assert ex.credential == CLIENT_KEY  # the client's own key, untouched
    assert ex.headers["host"] == "api.anthropic.com"
    assert LOCAL_KEY not in json.dumps(ex.headers)
    call = call_record(agent, r.headers["x-langwatch-request-id"])  # metered like any call
    assert call["provider"] == "anthropic" and call["usage"]["output_tokens"] == ex.usage.output_tokens


def test_subscription_oauth_bearer_is_forwarded_untouched(agent, provider):
    with proxied(agent) as client:
        r = client.post("https://api.anthropic.com/v1/messages?beta=true", headers={"authorization": f"Bearer {OAUTH}"}, json={**MESSAGES, "stream": True})
    assert r.status_code == 200 and b"message_stop" in r.content
    assert provider.last.auth == {"authorization": f"Bearer {OAUTH}"}


def test_policy_refusal_arrives_in_the_dialects_shape_and_never_leaves(agent, provider):
    with proxied(agent) as client:
        r = client.post("https://api.openai.com/v1/chat/completions", headers={"authorization": "Bearer sk-own"},
                        json={"model": "o3-forbidden", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_not_allowed" and "type" not in r.json()  # OpenAI's shape
    assert r.headers["x-langwatch-handled-error"] == "model_not_allowed"
    assert provider.exchanges == []


def test_other_paths_on_an_llm_host_pass_ungoverned(agent, provider):
    with proxied(agent) as client:
        r = client.get("https://api.anthropic.com/api/oauth/profile", headers={"authorization": f"Bearer {OAUTH}"})
    assert r.status_code == 404  # the fake's own answer
    assert "x-langwatch-request-id" not in r.headers
    assert provider.last.path == "/api/oauth/profile" and provider.last.auth["authorization"] == f"Bearer {OAUTH}"


# -- other hosts stay end-to-end encrypted ---------------------------------------------------


def test_other_host_is_tunnelled_with_its_own_certificate(agent, pki, origin):
    origin.clear()
    with proxied(agent, verify=pki[0]) as client:  # trusts only the public root, not the agent's CA
        with client.stream("GET", f"https://{OTHER_HOST}/v1/models") as r:
            r.read()
            issuer = peer_issuer(r)
    assert issuer == "Test Public Root" and r.status_code == 200
    assert origin.last.headers["host"] == OTHER_HOST
    assert "x-langwatch-request-id" not in r.headers
    # The agent's CA alone cannot verify it: nothing was re-signed.
    with proxied(agent) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(f"https://{OTHER_HOST}/")


def test_pac_file_is_served_by_the_proxy_listener(agent):
    r = httpx.get(f"http://{agent.proxy}/proxy.pac")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ns-proxy-autoconfig"
    assert f'return "PROXY {agent.proxy}";' in r.text and '"api.anthropic.com"' in r.text


# -- the official SDKs -------------------------------------------------------------------------


def test_anthropic_sdk_through_the_proxy(agent, provider):
    with anthropic.Anthropic(api_key=CLIENT_KEY, max_retries=0, http_client=proxied(agent, module=httpx2)) as client:
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = stream.get_final_text()
    assert text and provider.last.credential == CLIENT_KEY


def test_openai_sdk_through_the_proxy(agent, provider):
    with openai.OpenAI(api_key="sk-proj-own", max_retries=0, http_client=proxied(agent, module=httpx2)) as client:
        answer = client.responses.create(model="gpt-5", input="hi")
    assert answer.output_text and provider.last.credential == "sk-proj-own"
    assert provider.last.path == "/v1/responses"


def test_genai_sdk_through_the_proxy(agent, provider):
    with proxied(agent) as http_client:
        client = genai.Client(api_key="AIza-own", http_options=types.HttpOptions(httpx_client=http_client))
        answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.text and provider.last.credential == "AIza-own"
    assert provider.last.path.startswith("/v1/models/gemini-2.5-flash:generateContent")


# -- budgets -----------------------------------------------------------------------------------


def test_budget_refusal_in_the_dialects_shape(tmp_path, pki, provider, origin):
    budget = {
        "id": "bud_tiny", "scope": "principal", "scope_id": "user_test", "principal_id": "user_test", "window": "month",
        "limit_micro_usd": 1, "spent_micro_usd": 1, "resets_at": int(time.time()) + 86400, "on_breach": "block",
    }  # fmt: skip
    proc = start_intercepting(tmp_path / "budget", pki, provider, origin, {"budgets": [budget]})
    try:
        with proxied(proc) as client:
            r = client.post("https://api.anthropic.com/v1/messages", headers={"x-api-key": CLIENT_KEY}, json=MESSAGES)
        assert r.status_code == 402
        assert r.json()["type"] == "error" and r.json()["error"]["code"] == "budget_exceeded"  # Anthropic's shape
        assert provider.exchanges == []
    finally:
        proc.kill()
