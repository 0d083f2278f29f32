"""The fallback forwarder: walks a call's upstream chain until one answers, then
streams that answer back byte for byte.

mitmproxy binds a flow to one server connection: once the request is sent
there, no hook can re-issue it elsewhere and still stream the new answer to
the waiting client (an addon-made response is sent whole). So a call whose
plan holds more than one upstream is handed to this relay instead: Route
points the flow at a loopback port served here, keyed by a one-time token;
the relay tries each upstream with httpx, fails over on 5xx / 429 / 404 /
timeout / network error as long as nothing has been sent back yet, and then
streams the first good (or the last) answer to mitmproxy, which streams it to
the client through the meter's tap as usual. A cut after the first byte ends
the stream with the dialect's terminal error event instead of a torn body.

Calls with a single upstream never come here: mitmproxy dials it directly.
docs/routing.md explains the trade-off.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as _random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import h11
import httpx

from agent import secrets
from agent.config import Settings
from agent.core.dialects import Dialect, Provider
from agent.core.errors import GatewayError, render
from agent.core.routing import (
    ALL_DIALECTS,
    AZURE_OPENAI,
    DIALECTS_OF,
    GATEWAY,
    CircuitBreaker,
    Mode,
    Router,
    Scheme,
    Target,
    breaker_counts_status,
    retryable_status,
    terminal_error,
)
from agent.core.upstream import Upstream

log = logging.getLogger("governor.forwarder")

TOKEN_HEADER = "x-governor-relay"
FALLBACK_HEADER = "X-Langwatch-Fallback-Count"
UPSTREAM_HEADER = "X-Governor-Upstream"
# Framing and connection headers belong to each hop; content-length is kept (raw bytes are forwarded).
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"})
_REQUEST_DROP = _HOP | {"host", "content-length", TOKEN_HEADER}


def build_router(settings: Settings) -> Router:
    targets: dict[str, Target] = {
        p.value: Target(p.value, Upstream.parse(settings.base_url(p)), DIALECTS_OF[p]) for p in Provider
    }
    if settings.gateway_url:
        targets[GATEWAY] = Target(GATEWAY, Upstream.parse(settings.gateway_url.rstrip("/")), ALL_DIALECTS)
    if settings.azure_openai_base_url:
        query = (("api-version", settings.azure_openai_api_version),) if settings.azure_openai_api_version else ()
        targets[AZURE_OPENAI] = Target(
            AZURE_OPENAI,
            Upstream.parse(settings.azure_openai_base_url.rstrip("/")),
            DIALECTS_OF[Provider.OPENAI],
            Scheme.AZURE,
            query,
        )
    modes = {Provider(p): Mode(m) for p, m in settings.upstream_modes.items() if p in Provider.__members__.values()}
    breaker = CircuitBreaker(settings.circuit_threshold, settings.circuit_window_s, settings.circuit_cooldown_s)
    return Router(targets, Mode(settings.upstream_mode), modes, breaker)


def azure_key(settings: Settings) -> str | None:
    if settings.azure_openai_api_key:
        return settings.azure_openai_api_key.get_secret_value()
    return secrets.get_secret("azure_openai_api_key", settings.data_dir) if settings.azure_openai_base_url else None


def upstream_ssl_context(extra_ca: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


@dataclass
class Job:
    """One call to walk: what to send, where to, and (filled in) what happened."""

    request_id: str
    method: str
    path: str  # the client's path and query
    headers: list[tuple[str, str]]  # without any credential
    client_auth: list[tuple[str, str]]  # the client's own credential headers (passthrough)
    body: bytes
    provider: Provider
    dialect: Dialect
    attempts: tuple[Target, ...]
    positions: tuple[int, ...]  # upstreams passed over before each attempt (circuit-open ones included)
    credentials: dict[str, str]  # target name -> its secret
    gemini_array: bool = False
    fallback_count: int = 0
    upstream: str | None = None
    failures: list[str] = field(default_factory=list)

    def headers_for(self, target: Target) -> list[tuple[str, str]]:
        if target.scheme is Scheme.CLIENT:
            return self.headers + self.client_auth
        return self.headers + list(target.auth_headers(self.provider, self.credentials.get(target.name, "")).items())


class _Aborted(Exception):
    """The stream cannot be ended cleanly: drop the connection so the cut is visible."""


class Forwarder:
    def __init__(self, settings: Settings, breaker: CircuitBreaker, clock: Callable[[], float] = time.monotonic):
        self.breaker = breaker
        self.clock = clock
        self.header_timeout_s = settings.upstream_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s),
            verify=upstream_ssl_context(settings.upstream_ca_file),
            trust_env=False,
            follow_redirects=False,
        )
        self._jobs: dict[str, Job] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._client.aclose()

    def submit(self, job: Job) -> str:
        token = _random.token_urlsafe(18)
        self._jobs[token] = job
        return token

    def discard(self, token: str) -> None:
        self._jobs.pop(token, None)

    # -- the loopback side (mitmproxy is the only client) --------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                token = await _read_request(conn, reader)
                if token is None:
                    return
                job = self._jobs.pop(token, None)
                if job is None:
                    await _send_whole(conn, writer, 502, b'{"error":{"message":"unknown relay token"}}', [])
                    return
                await self._walk(job, conn, writer)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, _Aborted, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    # -- the chain walk -------------------------------------------------------------

    async def _walk(self, job: Job, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        last_error: GatewayError | None = None
        for index, target in enumerate(job.attempts):
            final = index == len(job.attempts) - 1
            request = self._client.build_request(
                job.method, target.url(job.path), headers=job.headers_for(target), content=job.body
            )
            try:
                response = await asyncio.wait_for(self._client.send(request, stream=True), self.header_timeout_s)
            except (TimeoutError, httpx.TimeoutException):
                last_error = GatewayError("provider_timeout", f"{target.name} did not answer in time")
                self._failed(job, target, "timeout", count=True)
                continue
            except httpx.TransportError as exc:
                last_error = GatewayError("provider_error", f"could not reach {target.name}: {type(exc).__name__}")
                self._failed(job, target, "network", count=True)
                continue
            status = response.status_code
            if retryable_status(status) and not final:
                await response.aclose()
                self._failed(job, target, f"status_{status}", count=breaker_counts_status(status))
                continue
            if status < 400:
                self.breaker.success(target.name)
            elif breaker_counts_status(status):
                self.breaker.failure(target.name, self.clock())
            job.fallback_count, job.upstream = job.positions[index], target.name
            await self._stream(job, response, conn, writer)
            return
        # Every attempt raised: the last one's error, in the client's dialect.
        error = last_error or GatewayError("circuit_open", "every upstream for this call is cooling down")
        job.fallback_count = job.positions[-1] if job.positions else 0
        status, body, headers = render(error, job.dialect)
        extra = [(k, v) for k, v in headers.items()] + _count_header(job)
        await _send_whole(conn, writer, status, body, extra)

    def _failed(self, job: Job, target: Target, reason: str, count: bool) -> None:
        job.failures.append(f"{target.name}:{reason}")
        opened = self.breaker.failure(target.name, self.clock()) if count else False
        log.warning(
            "upstream_failed request_id=%s upstream=%s reason=%s circuit=%s",
            job.request_id, target.name, reason, "opened" if opened else self.breaker.state(target.name, self.clock()),
        )

    async def _stream(self, job: Job, response: httpx.Response, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _HOP]
        headers += _count_header(job) + [(UPSTREAM_HEADER, job.upstream or "")]
        framed = "content-length" in response.headers
        streaming = "event-stream" in response.headers.get("content-type", "") or job.gemini_array
        events = 0
        try:
            writer.write(conn.send(h11.Response(status_code=response.status_code, headers=headers)))
            try:
                async for chunk in response.aiter_raw():
                    if job.dialect is Dialect.OPENAI_RESPONSES:
                        events += chunk.count(b"\n\n")
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
            except httpx.TransportError as exc:  # the upstream died after the first byte
                self.breaker.failure(job.upstream or "", self.clock())
                log.warning("upstream_cut request_id=%s upstream=%s error=%s", job.request_id, job.upstream, type(exc).__name__)
                if framed or not streaming:
                    raise _Aborted from exc
                message = f"the upstream ({job.upstream}) ended the stream early: {type(exc).__name__}"
                end = terminal_error(job.dialect, message, gemini_array=job.gemini_array, sequence=events)
                writer.write(conn.send(h11.Data(data=end)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            await response.aclose()


def _count_header(job: Job) -> list[tuple[str, str]]:
    return [(FALLBACK_HEADER, str(job.fallback_count))] if job.fallback_count > 0 else []


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> str | None:
    """Read one whole request; its relay token (None: the connection ended)."""
    token: str | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.Request):
            for name, value in event.headers:
                if name == TOKEN_HEADER.encode():
                    token = value.decode()
        elif isinstance(event, h11.EndOfMessage):
            return token or ""
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send_whole(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes, headers: list[tuple[str, str]]
) -> None:
    head = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("content-length", str(len(body)))]
    writer.write(conn.send(h11.Response(status_code=status, headers=head)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def relay_request_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers minus what each hop sets for itself."""
    return [(k, v) for k, v in headers if k.lower() not in _REQUEST_DROP]
