"""A loopback fake of the control plane, speaking `docs/control-plane.md` exactly.

One threaded HTTP/1.1 server: device login (`/api/auth/cli/*`), the bundle with
ETag/304, the `/changes` long-poll (200/204), spend commands with per-record
rejections, and an OTLP/HTTP protobuf receiver that decodes what it gets.

    with FakeControlPlane() as cp:
        cp.url                              # http://127.0.0.1:<port>
        cp.update_bundle(models_allowed=[…])  # new revision, VK_CONFIG_UPDATED
        cp.revoke()                         # 403 virtual_key_revoked + VK_REVOKED
        cp.configure(fail={"bundle": 500}, delay={"spend": 2.0}, reject_spend={"req_x": "invalid_model"})
        cp.down(); cp.up()                  # unreachable, then back on the same port
        cp.spend                            # {(command, gateway_request_id): record} — idempotent
        cp.spans                            # decoded spans, attributes as a dict

Failure knobs (`configure`): `fail` (endpoint -> status for every request),
`fail_times` (endpoint -> how many next requests fail with `fail_status`, default
500), `delay` (endpoint -> seconds before answering), `malformed` (endpoints
answering invalid JSON), `wrong_etag` (bundle answers 304 whatever was asked),
`vk_error` (the error code `/virtual-key` answers with), `approve_after` (exchange
polls before the device is approved; None = wait for `approve()`),
`slow_down_polls`, `deny`, `expire`. Endpoints: device-code, exchange, refresh,
logout, virtual-key, bundle, changes, spend, traces.

Standalone (manual tests):  python3 -m uv run python -m tests.fakes.controlplane --port 5560
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.otlp import decode_export_request

DEFAULT_BUNDLE: dict[str, Any] = {
    "revision": "1",
    "vk_id": "vk_fake_ada",
    "status": "active",
    "display_prefix": "vk-lw-01FAKE",
    "organization_id": "org_fake",
    "team_id": "team_fake",
    "project_id": "proj_fake",
    "project_otlp_token": "otlp-token-fake",
    "principal_id": "user_ada",
    "vk_tags": ["engineering", "laptop"],
    "expires_at": None,
    "model_aliases": {},
    "models_allowed": None,
    "policy_rules": {},
    "budgets": [],
    "max_stale_s": 86400,
    "on_stale": "fail_open",
}

_ENDPOINTS = {
    "/api/auth/cli/device-code": "device-code",
    "/api/auth/cli/exchange": "exchange",
    "/api/auth/cli/refresh": "refresh",
    "/api/auth/cli/logout": "logout",
    "/api/auth/cli/virtual-key": "virtual-key",
    "/api/agent/v1/bundle": "bundle",
    "/api/agent/v1/changes": "changes",
    "/api/agent/v1/spend-commands": "spend",
    "/api/otel/v1/traces": "traces",
}


@dataclass
class Knobs:
    fail: dict[str, int] = field(default_factory=dict)
    fail_times: dict[str, int] = field(default_factory=dict)
    fail_status: int = 500
    delay: dict[str, float] = field(default_factory=dict)
    malformed: set[str] = field(default_factory=set)
    wrong_etag: bool = False
    vk_error: str | None = None
    approve_after: int | None = 1
    slow_down_polls: int = 0
    deny: bool = False
    expire: bool = False
    reject_spend: dict[str, str] = field(default_factory=dict)  # gateway_request_id -> code
    bad_record_ids: set[str] = field(default_factory=set)  # a batch holding one of these: whole-batch 400
    access_expires_in: int = 3600
    interval: float = 5  # seconds between exchange polls the device-code answer asks for


@dataclass
class DeviceGrant:
    device_code: str
    user_code: str
    polls: int = 0
    approved: bool = False


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


class FakeControlPlane:
    def __init__(self, bundle: dict[str, Any] | None = None, port: int = 0, vk_secret: str | None = None):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.knobs = Knobs()
        self.bundle: dict[str, Any] = copy.deepcopy(bundle or DEFAULT_BUNDLE)
        self.vk_secret = vk_secret or "vk-lw-" + secrets.token_hex(13)
        self.vk_status: str | None = None  # None active, else a refusal code
        self.feed_revision = int(self.bundle.get("revision") or 1)
        self.changes: list[dict[str, Any]] = []
        self.grants: dict[str, DeviceGrant] = {}
        self.access_tokens: dict[str, float] = {}  # token -> expires at
        self.refresh_tokens: set[str] = set()
        self.revoked_refresh: set[str] = set()
        self.minted_vks = 0
        self.spend: dict[tuple[str, str], dict[str, Any]] = {}
        self.spend_deliveries = 0  # records received, duplicates included
        self.spend_batches: list[int] = []  # size of each batch received
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.inflight: dict[str, int] = {}
        self.max_inflight: dict[str, int] = {}  # endpoint -> most requests open at once
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> FakeControlPlane:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def up(self) -> None:
        if self._server is not None:
            return
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until `up()` (same port)."""
        server, self._server = self._server, None
        if server is not None:
            with self.changed:
                self.changed.notify_all()
            server.shutdown()
            server.server_close()
            with self.lock:
                conns, self._conns = list(self._conns), set()
            for conn in conns:  # keep-alive connections too: down means down
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- scripting -------------------------------------------------------------

    def configure(self, **kw: Any) -> None:
        with self.lock:
            for key, value in kw.items():
                if not hasattr(self.knobs, key):
                    raise AttributeError(f"no knob {key!r}")
                setattr(self.knobs, key, value)

    def reset_knobs(self) -> None:
        with self.lock:
            self.knobs = Knobs()

    def etag(self) -> str:
        with self.lock:
            digest = hashlib.sha256(json.dumps(self.bundle, sort_keys=True).encode()).hexdigest()[:16]
            return f'"{self.bundle["revision"]}.{digest}"'

    def emit(self, kind: str, **ids: Any) -> None:
        with self.changed:
            self.feed_revision += 1
            change = {"kind": kind, "virtual_key_id": None, "budget_id": None, "model_provider_id": None,
                      "project_id": None, "revision": str(self.feed_revision)}
            change.update(ids)
            self.changes.append(change)
            self.changed.notify_all()

    def update_bundle(self, kind: str = "VK_CONFIG_UPDATED", emit: bool = True, **fields: Any) -> None:
        """Change bundle fields, bump its revision, and (by default) announce it on the feed."""
        with self.lock:
            self.bundle.update(fields)
            self.bundle["revision"] = str(int(self.bundle["revision"]) + 1)
        if emit:
            self.emit(kind, virtual_key_id=self.bundle["vk_id"])

    def revoke(self, code: str = "virtual_key_revoked", emit: bool = True) -> None:
        """Revoke (or disable) the key: 403 everywhere; `VK_REVOKED`/`VK_DISABLED` on the feed."""
        with self.lock:
            self.vk_status = code
        if emit:
            kind = "VK_DISABLED" if code == "virtual_key_disabled" else "VK_REVOKED"
            self.emit(kind, virtual_key_id=self.bundle["vk_id"])

    def reinstate(self) -> None:
        with self.lock:
            self.vk_status = None
        self.emit("VK_ENABLED", virtual_key_id=self.bundle["vk_id"])

    def approve(self, user_code: str | None = None) -> None:
        with self.lock:
            for grant in self.grants.values():
                if user_code is None or grant.user_code == user_code:
                    grant.approved = True

    def count(self, endpoint: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if _ENDPOINTS.get(r.path) == endpoint)

    def requests_to(self, endpoint: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if _ENDPOINTS.get(r.path) == endpoint]


def _error(code: str, message: str = "") -> dict[str, Any]:
    return {"error": {"type": code, "code": code, "message": message or code.replace("_", " ")}}


def _handler(cp: FakeControlPlane) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            with cp.lock:
                cp._conns.add(self.connection)

        def finish(self) -> None:
            with cp.lock:
                cp._conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
            payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            if body is not None and raw is None:
                self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._dispatch_quietly()

        def do_POST(self) -> None:
            self._dispatch_quietly()

        def _dispatch_quietly(self) -> None:
            try:
                self._dispatch()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the agent hung up (a cancelled long-poll at shutdown)

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            req = Request(self.command, parts.path, query, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
            endpoint = _ENDPOINTS.get(parts.path)
            with cp.lock:
                cp.requests.append(req)
                knobs = copy.deepcopy(cp.knobs)
                if endpoint in cp.knobs.fail_times and cp.knobs.fail_times[endpoint] > 0:
                    cp.knobs.fail_times[endpoint] -= 1
                    forced: int | None = cp.knobs.fail_status
                else:
                    forced = knobs.fail.get(endpoint or "")
            if endpoint is None:
                return self._send(404, _error("not_found"))
            with cp.lock:
                cp.inflight[endpoint] = cp.inflight.get(endpoint, 0) + 1
                cp.max_inflight[endpoint] = max(cp.max_inflight.get(endpoint, 0), cp.inflight[endpoint])
            try:
                self._answer(endpoint, req, body, knobs, forced)
            finally:
                with cp.lock:
                    cp.inflight[endpoint] -= 1

        def _answer(self, endpoint: str, req: Request, body: bytes, knobs: Knobs, forced: int | None) -> None:
            if knobs.delay.get(endpoint):
                time.sleep(knobs.delay[endpoint])
            if forced:
                return self._send(forced, _error("internal_error" if forced >= 500 else f"http_{forced}"))
            if endpoint in knobs.malformed:
                return self._send(200, raw=b'{"this is": not json', headers={"Content-Type": "application/json"})
            try:
                data = json.loads(body) if body and endpoint != "traces" else {}
            except ValueError:
                return self._send(400, _error("bad_request", "body is not JSON"))
            getattr(self, "ep_" + endpoint.replace("-", "_"))(req, data, knobs)

        # -- device login ----------------------------------------------------

        def ep_device_code(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            grant = DeviceGrant("dc_" + secrets.token_hex(16), f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}")
            with cp.lock:
                cp.grants[grant.device_code] = grant
            self._send(200, {
                "device_code": grant.device_code,
                "user_code": grant.user_code,
                "verification_uri": cp.url + "/cli/auth",
                "verification_uri_complete": f"{cp.url}/cli/auth?code={grant.user_code}",
                "expires_in": 600,
                "interval": knobs.interval,
            })

        def ep_exchange(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            with cp.lock:
                grant = cp.grants.get(str(data.get("device_code")))
                if grant is None:
                    return self._send(400, {"error": "invalid_grant", "error_description": "unknown device_code"})
                grant.polls += 1
                if knobs.expire:
                    return self._send(408, {"error": "expired_token", "error_description": "the device code expired"})
                if knobs.deny:
                    return self._send(403, {"error": "access_denied", "error_description": "the user denied the request"})
                if grant.polls <= knobs.slow_down_polls:
                    return self._send(429, {"error": "slow_down", "error_description": "polling too fast"})
                if knobs.approve_after is not None and grant.polls > knobs.approve_after:
                    grant.approved = True
                if not grant.approved:
                    return self._send(400, {"error": "authorization_pending", "error_description": "waiting for approval"})
                del cp.grants[grant.device_code]
                tokens = self._issue_tokens(knobs)
            self._send(200, {
                **tokens,
                "user": {"id": "user_ada", "email": "ada@example.com", "name": "Ada"},
                "organization": {"id": "org_fake", "slug": "fake", "name": "Fake Org"},
                "default_personal_vk": None,
                "personal_project": {"id": "proj_fake", "slug": "ada", "name": "Ada's project"},
            })

        def _issue_tokens(self, knobs: Knobs) -> dict[str, Any]:
            access, refresh = "at_" + secrets.token_hex(16), "rt_" + secrets.token_hex(16)
            cp.access_tokens[access] = time.time() + knobs.access_expires_in
            cp.refresh_tokens.add(refresh)
            return {"access_token": access, "expires_in": knobs.access_expires_in,
                    "refresh_token": refresh, "refresh_expires_in": 30 * 86400}

        def _bearer(self) -> str | None:
            value = self.headers.get("Authorization") or ""
            return value[7:] if value.lower().startswith("bearer ") else None

        def ep_refresh(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            token = str(data.get("refresh_token"))
            with cp.lock:
                if token not in cp.refresh_tokens:
                    return self._send(401, _error("invalid_refresh_token", "sign in again"))
                cp.refresh_tokens.discard(token)
                tokens = self._issue_tokens(knobs)
            self._send(200, tokens)

        def ep_logout(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            with cp.lock:
                cp.access_tokens.pop(self._bearer() or "", None)
                token = data.get("refresh_token")
                if token in cp.refresh_tokens:
                    cp.refresh_tokens.discard(token)
                    cp.revoked_refresh.add(token)
            self._send(200, {"ok": True})

        def ep_virtual_key(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            with cp.lock:
                expires = cp.access_tokens.get(self._bearer() or "")
                if expires is None or expires < time.time():
                    return self._send(401, _error("unauthorized", "access token missing or expired"))
                if knobs.vk_error:
                    return self._send(409, _error(knobs.vk_error))
                cp.minted_vks += 1
            self._send(201, {"id": cp.bundle["vk_id"], "secret": cp.vk_secret, "prefix": cp.vk_secret[:13]})

        # -- agent endpoints --------------------------------------------------

        def _vk_refusal(self) -> bool:
            """Send 401/403 and return True unless the request carries the live personal VK."""
            with cp.lock:
                if self._bearer() != cp.vk_secret:
                    self._send(401, _error("invalid_api_key", "unknown or missing virtual key"))
                    return True
                if cp.vk_status:
                    self._send(403, _error(cp.vk_status))
                    return True
            return False

        def ep_bundle(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            if self._vk_refusal():
                return
            etag = cp.etag()
            headers = {"ETag": etag, "Cache-Control": "no-store"}
            if knobs.wrong_etag or req.headers.get("if-none-match") == etag:
                return self._send(304, headers=headers)
            with cp.lock:
                body = json.dumps(cp.bundle).encode()
            self._send(200, raw=body, headers={**headers, "Content-Type": "application/json"})

        def ep_changes(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            if self._vk_refusal():
                return
            try:
                since = int(req.query.get("since") or 0)
                timeout = min(25.0, float(req.query.get("timeout_s") or 10))
            except ValueError:
                return self._send(400, _error("bad_request", "since and timeout_s must be numbers"))
            deadline = time.monotonic() + timeout
            with cp.changed:
                while True:
                    news = [c for c in cp.changes if int(c["revision"]) > since]
                    if news or cp._server is None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    cp.changed.wait(min(left, 0.5))
                current = str(cp.feed_revision)
            if not news:
                return self._send(204, headers={"X-LangWatch-Revision": current})
            self._send(200, {"current_revision": current, "changes": news})

        def ep_spend(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            if self._vk_refusal():
                return
            records = data.get("records")
            if not isinstance(records, list) or len(records) > 500:
                return self._send(400, _error("bad_request", "records must be a list of at most 500"))
            ids = {str((r.get("payload") or {}).get("gateway_request_id")) for r in records if isinstance(r, dict)}
            if ids & knobs.bad_record_ids:
                return self._send(400, _error("bad_request", "a record cannot be parsed"))
            rejected = []
            accepted = 0
            with cp.lock:
                cp.spend_batches.append(len(records))
                for index, record in enumerate(records):
                    cp.spend_deliveries += 1
                    payload = record.get("payload") if isinstance(record, dict) else None
                    command = record.get("command") if isinstance(record, dict) else None
                    rid = payload.get("gateway_request_id") if isinstance(payload, dict) else None
                    if command not in ("admitSpend", "confirmSpend", "failSpend") or not rid:
                        rejected.append({"index": index, "code": "invalid_record", "message": "command and gateway_request_id required"})
                        continue
                    if rid in knobs.reject_spend:
                        rejected.append({"index": index, "code": knobs.reject_spend[rid], "message": "rejected by the fake"})
                        continue
                    cp.spend.setdefault((command, rid), record)  # idempotent: first delivery wins
                    accepted += 1
            self._send(200, {"accepted": accepted, "rejected": rejected})

        def ep_traces(self, req: Request, data: dict[str, Any], knobs: Knobs) -> None:
            with cp.lock:
                expected = cp.bundle.get("project_otlp_token")
            if not expected or req.headers.get("x-auth-token") != expected:
                return self._send(401, _error("unauthorized", "X-Auth-Token does not match a project"))
            if req.headers.get("content-type") != "application/x-protobuf":
                return self._send(415, _error("unsupported_media_type"))
            try:
                resource, spans = decode_export_request(req.body)
            except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
                return self._send(400, _error("bad_request", f"not an ExportTraceServiceRequest: {exc}"))
            with cp.lock:
                cp.resources.append(resource)
                cp.spans.extend(spans)
            self._send(200, raw=b"", headers={"Content-Type": "application/x-protobuf"})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="fake Governor control plane")
    parser.add_argument("--port", type=int, default=5560)
    args = parser.parse_args()
    cp = FakeControlPlane(port=args.port)
    cp.up()
    print(f"fake control plane on {cp.url}; personal VK {cp.vk_secret}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cp.down()


if __name__ == "__main__":
    main()
