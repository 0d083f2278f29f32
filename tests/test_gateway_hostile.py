"""Hostile and broken inputs: a clear error in the client's dialect, never a
traceback, never a hang, never a request forwarded that should not be."""

from __future__ import annotations

import socket
import time

import httpx

from tests.gateway_client import call_record
from tests.harness import LOCAL_KEY, free_port

AUTH = {"authorization": f"Bearer {LOCAL_KEY}"}
CHAT = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}


def test_malformed_json_is_a_400_and_not_forwarded(governed, fake):
    r = httpx.post(governed.base_url + "/v1/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=b'{"model": ')
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"
    r = httpx.post(governed.base_url + "/v1/messages", headers={**AUTH, "content-type": "application/json"}, content=b"[1,2]")
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert fake.generate_exchanges() == []


def test_wrong_content_type_and_missing_model(governed, fake):
    r = httpx.post(governed.base_url + "/v1/chat/completions", headers={**AUTH, "content-type": "text/plain"}, content=b"hello")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(governed.base_url + "/v1/messages", headers=AUTH, json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_model"
    assert fake.generate_exchanges() == []


def test_dns_rebinding_host_is_refused(governed, fake):
    for host in ("evil.example", "evil.example:8787", "127.0.0.1.nip.io"):
        r = httpx.post(governed.base_url + "/v1/chat/completions", headers={**AUTH, "host": host}, json=CHAT)
        assert r.status_code == 403, host
        assert r.json()["error"]["code"] == "forbidden_host"
    for host in ("localhost", f"127.0.0.1:{governed.port}", f"localhost:{governed.port}"):
        assert httpx.get(governed.base_url + "/healthz", headers={"host": host}).status_code == 200
    assert fake.generate_exchanges() == []


def test_browser_origin_is_refused(governed, fake):
    r = httpx.post(governed.base_url + "/v1/messages", headers={**AUTH, "origin": "https://evil.example"}, json={"model": "m"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
    r = httpx.options(governed.base_url + "/v1/messages", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = httpx.get(governed.base_url + "/_governor/v1/status", headers={**AUTH, "referer": "https://evil.example/page"})
    assert r.status_code == 403
    assert fake.generate_exchanges() == []


def test_oversized_body_is_413_json(start_agent, fake_provider):
    agent = start_agent(upstream=fake_provider.base_url, env={"GOVERNOR_BODY_LIMIT_BYTES": "100000"})
    fake_provider.clear()
    r = httpx.post(agent.base_url + "/v1/messages", headers={**AUTH, "content-type": "application/json"}, content=b" " * 200_000)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert r.headers["x-langwatch-handled-error"] == "payload_too_large"
    assert fake_provider.generate_exchanges() == []


def test_upstream_connection_refused_is_a_502_envelope(start_agent):
    closed = f"http://127.0.0.1:{free_port()}"
    agent = start_agent(upstream=closed)
    r = httpx.post(agent.base_url + "/v1/chat/completions", headers=AUTH, json=CHAT, timeout=10)
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "provider_error"
    assert r.headers["x-langwatch-request-id"].startswith("req_")
    # The agent is still healthy afterwards.
    assert httpx.get(agent.base_url + "/healthz").status_code == 200


def test_provider_error_passes_through_unchanged(governed, fake):
    fake.configure(error_status=529)
    r = httpx.post(governed.base_url + "/v1/messages", headers=AUTH, json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
    assert r.status_code == 529
    assert r.content == bytes(fake.last.sent)
    assert "x-langwatch-handled-error" not in r.headers
    assert r.json()["error"]["type"] == "overloaded_error"


def test_truncated_upstream_stream_ends_with_the_dialects_error_event(governed, fake):
    fake.configure(truncate_after=3)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", governed.base_url + "/v1/messages", headers=AUTH, json=body) as r:
        request_id = r.headers["x-langwatch-request-id"]
        received = r.read()
    ex = fake.last
    assert ex.truncated
    # What the provider sent, byte for byte, then Anthropic's own terminal error event.
    assert received.startswith(bytes(ex.sent))
    tail = received[len(ex.sent):]
    assert tail.startswith(b"event: error\ndata: ") and b'"type":"error"' in tail
    call = call_record(governed, request_id)
    assert call["error"]
    # message_start arrived, so the input side of usage is known even though the stream died.
    assert call["usage"]["input_tokens"] == ex.usage.input_tokens


def test_client_disconnect_mid_stream_ends_upstream_and_is_recorded(governed, fake):
    fake.configure(delay=0.2, text_deltas=30)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{governed.port}\r\nAuthorization: Bearer {LOCAL_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(__import__('json').dumps(body))}\r\n\r\n"
        + __import__("json").dumps(body)
    ).encode()
    with socket.create_connection(("127.0.0.1", governed.port)) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        request_id = head.split(b"X-Langwatch-Request-Id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        time.sleep(0.5)
    # The upstream sees the hang-up well before its 6 s stream would have ended.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not fake.last.client_disconnected:
        time.sleep(0.05)
    assert fake.last.client_disconnected and not fake.last.complete
    call = call_record(governed, request_id)
    assert call["error"] and call["usage"]["input_tokens"] == fake.last.usage.input_tokens


def test_non_loopback_listen_is_refused(tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "GOVERNOR_LISTEN": "0.0.0.0:8787", "GOVERNOR_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "agent.cli", "run"], env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr


def test_no_key_in_the_log_and_private_state_files(governed, fake):
    import os
    import stat

    for headers in ({"authorization": f"Bearer {LOCAL_KEY}"}, {"x-api-key": "wrong-key-should-not-be-logged"}):
        httpx.post(governed.base_url + "/v1/chat/completions", headers=headers, json=CHAT)
    httpx.post(governed.base_url + "/v1beta/models/gemini-2.5-flash:generateContent", params={"key": LOCAL_KEY},
               json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    log = governed.log()
    assert 'msg="call" request_id=' in log  # the log is being written…
    for secret in (LOCAL_KEY, "sk-upstream-", "wrong-key-should-not-be-logged"):
        assert secret not in log  # …and holds no key
    data = governed.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("governor.db", "governor.db-wal", "mitmproxy/mitmproxy-ca.pem"):
        assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name


def test_a_second_agent_on_the_same_data_dir_is_refused(governed):
    import os
    import subprocess
    import sys

    from tests.harness import free_port

    env = {**governed.env, "GOVERNOR_LISTEN": f"127.0.0.1:{free_port()}"}
    done = subprocess.run([sys.executable, "-m", "agent.cli", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "another Governor agent is using" in done.stderr and "Traceback" not in done.stderr
    assert os.environ.get("GOVERNOR_DATA_DIR") != env["GOVERNOR_DATA_DIR"]  # it really was the same dir as `governed`
