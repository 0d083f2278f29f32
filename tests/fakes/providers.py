"""A loopback fake of Anthropic, OpenAI and Gemini, speaking their exact wire formats.

One threaded HTTP/1.1 server answers all three on one port, the way the real
APIs do (see the `*_wire` modules for the spelling of each). It records every
exchange, including the exact body bytes it sent, so an end-to-end test can
assert that a client behind the gateway received them unchanged.

    with FakeProvider() as fp:
        client = anthropic.Anthropic(base_url=fp.base_url, api_key="k", max_retries=0)
        ...
        ex = fp.last                    # the Exchange record
        assert ex.sent == bytes_the_client_saw
        fp.configure(error_status=529)  # thread-safe overrides, `fp.reset()` undoes them

What is answered: a text answer, or, when the last user turn contains
`FAKE_TOOL <name> <json-args>`, a call of that tool with those arguments.

Standalone (benchmarks, manual tests):
    python3 -m uv run python -m tests.fakes.providers --port 9100
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import select
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field, fields
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes import anthropic_wire, gemini_wire, openai_wire
from tests.fakes.scenario import (
    ANTHROPIC,
    D_ANTHROPIC,
    D_GEMINI,
    D_OPENAI_CHAT,
    D_OPENAI_RESPONSES,
    DEFAULT_TEXT,
    GEMINI,
    OPENAI,
    FakeUsage,
    Reply,
    Scenario,
    TextAnswer,
    ToolCall,
    pick_scenario,
)

if TYPE_CHECKING:
    from agent.core.usage import Usage

__all__ = ["Exchange", "FakeProvider", "FakeUsage", "Settings", "TextAnswer", "ToolCall"]

PROVIDER_OF = {D_ANTHROPIC: ANTHROPIC, D_OPENAI_CHAT: OPENAI, D_OPENAI_RESPONSES: OPENAI, D_GEMINI: GEMINI}

GENERATE, COUNT_TOKENS, LIST_MODELS = "generate", "count_tokens", "list_models"

_GEMINI_PATH = re.compile(r"^/(?:v1beta|v1|v1alpha)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")


@dataclass(slots=True)
class Settings:
    """Server-level overrides, read once per request (so a change never tears a response).

    Set them as attributes of the FakeProvider or with `configure()`.
    """

    text: str | None = None  # answer text; None = DEFAULT_TEXT for the provider
    text_deltas: int = 3  # how many delta events the text is split into
    tool_arg_pieces: int = 3  # how many pieces streamed tool arguments are split into
    usage: FakeUsage = field(default_factory=FakeUsage)
    model: str | None = None  # answer with this model name instead of echoing the request's
    latency: float = 0.0  # seconds before the response head
    delay: float = 0.0  # seconds between stream events
    truncate_after: int | None = None  # send N events (non-stream: half the body), then drop the connection
    hang: bool = False  # accept the request, never answer (until cleared or the fake closes)
    hang_after: int | None = None  # send N events, then stall (until cleared or the fake closes)
    stream_error_after: int | None = None  # send N events, then the provider's in-stream error event, then end
    error_status: int | None = None  # answer with this status and the provider's own error body
    error_message: str | None = None  # message inside that error body (None = the provider's usual one)
    error_times: int | None = None  # how many requests get the error; None = all of them
    error_headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "1"}
    require_key: str | None = None  # reject other credentials with the provider's auth error


SETTING_NAMES = tuple(f.name for f in fields(Settings))


@dataclass(slots=True)
class Exchange:
    """One request the fake received and what it sent back."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    raw_headers: list[tuple[str, str]]  # as received, in order
    raw_body: bytes
    body: Any  # parsed JSON, or None
    dialect: str | None = None  # anthropic | openai_chat | openai_responses | gemini
    operation: str | None = None  # generate | count_tokens | list_models
    model: str | None = None
    stream: str | None = None  # None, "sse", or "array" (Gemini without alt=sse)
    # Every credential seen, by where it came: authorization, x-api-key, x-goog-api-key, key (?key=).
    auth: dict[str, str] = field(default_factory=dict)
    scenario: Scenario | None = None
    usage: FakeUsage | None = None  # the numbers the answer was built from
    reported_usage: dict[str, Any] | None = None  # the usage object as the provider spelled it (None: not reported)
    stop_reason: str | None = None  # as the provider spelled it: end_turn, tool_calls, STOP, completed, …
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # The response body bytes, de-chunked, as written (on a failed write: as attempted).
    sent: bytearray = field(default_factory=bytearray)
    frames: list[bytes] = field(default_factory=list)  # stream events as written, one chunk each
    complete: bool = False  # the whole response (terminal chunk included) was written
    truncated: bool = False  # dropped on purpose by truncate_after
    client_disconnected: bool = False  # the client hung up before the response was complete
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def credential(self) -> str | None:
        """The key the client presented, whichever header carried it (Bearer stripped)."""
        for name in ("x-api-key", "x-goog-api-key", "authorization", "key"):
            if name in self.auth:
                value = self.auth[name]
                return value[7:] if value.lower().startswith("bearer ") else value
        return None

    def text_sent(self) -> str:
        return self.sent.decode("utf-8", errors="replace")

    def expected_usage(self) -> Usage:
        """What a correct usage tap computes from this exchange, in the `agent.core.usage` convention.

        Token fields only (`model` and `stop_reason` are left None). Assumes the
        usage frame reached the client: check `complete` for truncated streams.
        What was reported is what counts: a gateway that adds
        `stream_options.include_usage` upstream gets the usage here.
        """
        from agent.core.usage import Usage

        if self.reported_usage is None or self.usage is None:
            return Usage()  # nothing reported (an OpenAI stream without include_usage, an in-stream error)
        u = self.usage
        if self.dialect == D_ANTHROPIC:
            thinking = "output_tokens_details" in (self.reported_usage or {})
            return Usage(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_5m_tokens=u.cache_write_5m_tokens,
                cache_write_1h_tokens=u.cache_write_1h_tokens,
                reasoning_tokens=u.reasoning_tokens if thinking else 0,
                reported=True,
            )
        if self.dialect in (D_OPENAI_CHAT, D_OPENAI_RESPONSES):
            # One undifferentiated cache-write count: the 5 m bucket by convention.
            return Usage(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_5m_tokens=u.cache_write_tokens,
                reasoning_tokens=u.reasoning_tokens,
                reported=True,
            )
        # Gemini reports no cache writes: they are plain prompt tokens there.
        return Usage(
            input_tokens=u.input_tokens + u.cache_write_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            reasoning_tokens=u.reasoning_tokens,
            reported=True,
        )


@dataclass(frozen=True, slots=True)
class Route:
    dialect: str
    operation: str
    model: str | None = None
    stream: str | None = None


def route(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any) -> Route | None:
    """Which provider endpoint a request calls; None for anything the fake does not serve."""
    path = path.rstrip("/") or "/"
    model = body.get("model") if isinstance(body, dict) else None
    streamed = "sse" if isinstance(body, dict) and body.get("stream") is True else None
    if method == "POST":
        if path == "/v1/messages":
            return Route(D_ANTHROPIC, GENERATE, model, streamed)
        if path == "/v1/messages/count_tokens":
            return Route(D_ANTHROPIC, COUNT_TOKENS, model)
        if path == "/v1/chat/completions":
            return Route(D_OPENAI_CHAT, GENERATE, model, streamed)
        if path == "/v1/responses":
            return Route(D_OPENAI_RESPONSES, GENERATE, model, streamed)
        m = _GEMINI_PATH.match(path)
        if m and m["method"] in ("generateContent", "streamGenerateContent"):
            stream = None
            if m["method"] == "streamGenerateContent":
                stream = "sse" if query.get("alt") == ["sse"] else "array"
            return Route(D_GEMINI, GENERATE, m["model"], stream)
        if m and m["method"] == "countTokens":
            return Route(D_GEMINI, COUNT_TOKENS, m["model"])
        return None
    if method == "GET" and path in ("/v1/models", "/v1beta/models"):
        if path == "/v1beta/models" or "key" in query or "x-goog-api-key" in headers or "x-goog-api-client" in headers:
            return Route(D_GEMINI, LIST_MODELS)
        if "anthropic-version" in headers:
            return Route(D_ANTHROPIC, LIST_MODELS)
        return Route(D_OPENAI_CHAT, LIST_MODELS)
    return None


def credentials(headers: dict[str, str], query: dict[str, list[str]]) -> dict[str, str]:
    found = {name: headers[name] for name in ("authorization", "x-api-key", "x-goog-api-key") if name in headers}
    if "key" in query:
        found["key"] = query["key"][0]
    return found


@dataclass(slots=True)
class Response:
    """A rendered answer: a whole body, or stream frames sent one chunk each."""

    status: int
    content_type: str
    body: bytes = b""
    frames: list[bytes] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    reported_usage: dict[str, Any] | None = None
    stop_reason: str | None = None


def _provider_headers(dialect: str, request_id: str) -> list[tuple[str, str]]:
    if dialect == D_ANTHROPIC:
        return [("request-id", request_id), ("anthropic-organization-id", "00000000-0000-4000-8000-00000000fa4e")]
    if dialect in (D_OPENAI_CHAT, D_OPENAI_RESPONSES):
        return [("x-request-id", request_id), ("openai-version", "2020-10-01"), ("openai-processing-ms", "1")]
    return [("server", "scaffolding on HTTPServer2"), ("x-content-type-options", "nosniff")]


def render_error(dialect: str, status: int, message: str | None, request_id: str) -> Response:
    if dialect == D_ANTHROPIC:
        body = anthropic_wire.error_body(status, message, request_id)
        retry = [("x-should-retry", "true")] if status in (408, 409, 429) or status >= 500 else []
        return Response(status, anthropic_wire.JSON_CONTENT_TYPE, body, headers=retry)
    if dialect == D_GEMINI:
        return Response(status, gemini_wire.JSON_CONTENT_TYPE, gemini_wire.error_body(status, message))
    return Response(status, openai_wire.JSON_CONTENT_TYPE, openai_wire.error_body(status, message))


def render_auth_failure(dialect: str, presented: bool, request_id: str) -> Response:
    if dialect == D_GEMINI:
        # Google answers a wrong key with 400 INVALID_ARGUMENT and a missing one with 403.
        if presented:
            return Response(400, gemini_wire.JSON_CONTENT_TYPE, gemini_wire.bad_key_body())
        return Response(403, gemini_wire.JSON_CONTENT_TYPE, gemini_wire.missing_key_body())
    return render_error(dialect, 401, None, request_id)


def stream_error_frames(r: Route, message: str | None, frames: list[bytes], n: int, request_id: str) -> list[bytes]:
    """The first `n` frames, then the error event the provider sends inside a 200 stream."""
    kept = frames[:n]
    if r.dialect == D_ANTHROPIC:
        return kept + [anthropic_wire.stream_error(message, request_id)]
    if r.dialect == D_OPENAI_CHAT:
        return kept + [openai_wire.chat_stream_error(message)]
    if r.dialect == D_OPENAI_RESPONSES:
        return kept + [openai_wire.responses_stream_error(message, len(kept))]
    if r.stream == "array":
        kept = kept or [b"["]
        return kept + [gemini_wire.stream_error(message, array=True), b"\r\n]"]
    return kept + [gemini_wire.stream_error(message, array=False)]


def _ok(content_type: str, body: bytes = b"", frames: list[bytes] | None = None, **facts: Any) -> Response:
    return Response(200, content_type, body, frames, **facts)


def _render_anthropic(r: Route, reply: Reply) -> Response:
    ctype = anthropic_wire.JSON_CONTENT_TYPE
    if r.operation == LIST_MODELS:
        return _ok(ctype, anthropic_wire.models_body())
    if r.operation == COUNT_TOKENS:
        return _ok(ctype, anthropic_wire.count_tokens_body(reply.usage))
    stop = "tool_use" if isinstance(reply.scenario, ToolCall) else "end_turn"
    if r.stream:
        frames = anthropic_wire.stream_frames(reply)
        usage = anthropic_wire.delta_usage(reply)
        return _ok(anthropic_wire.STREAM_CONTENT_TYPE, frames=frames, reported_usage=usage, stop_reason=stop)
    usage = anthropic_wire.full_usage(reply)
    return _ok(ctype, anthropic_wire.message_body(reply), reported_usage=usage, stop_reason=stop)


def _render_openai_chat(r: Route, reply: Reply) -> Response:
    ctype = openai_wire.JSON_CONTENT_TYPE
    if r.operation == LIST_MODELS:
        return _ok(ctype, openai_wire.models_body())
    stop = "tool_calls" if isinstance(reply.scenario, ToolCall) else "stop"
    usage = openai_wire.chat_usage(reply.usage)
    if r.stream:
        options = reply.body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            usage = None  # OpenAI reports no usage in a stream unless asked to
        frames = openai_wire.chat_stream_frames(reply)
        return _ok(openai_wire.STREAM_CONTENT_TYPE, frames=frames, reported_usage=usage, stop_reason=stop)
    return _ok(ctype, openai_wire.chat_body(reply), reported_usage=usage, stop_reason=stop)


def _render_openai_responses(r: Route, reply: Reply) -> Response:
    usage = openai_wire.responses_usage(reply.usage)
    if r.stream:
        frames = openai_wire.responses_stream_frames(reply)
        return _ok(openai_wire.STREAM_CONTENT_TYPE, frames=frames, reported_usage=usage, stop_reason="completed")
    body = openai_wire.responses_body(reply)
    return _ok(openai_wire.JSON_CONTENT_TYPE, body, reported_usage=usage, stop_reason="completed")


def _render_gemini(r: Route, reply: Reply) -> Response:
    ctype = gemini_wire.JSON_CONTENT_TYPE
    if r.operation == LIST_MODELS:
        return _ok(ctype, gemini_wire.models_body())
    if r.operation == COUNT_TOKENS:
        return _ok(ctype, gemini_wire.count_tokens_body(reply.usage))
    facts: dict[str, Any] = {"reported_usage": gemini_wire.usage_metadata(reply.usage), "stop_reason": "STOP"}
    if r.stream == "sse":
        return _ok(gemini_wire.SSE_CONTENT_TYPE, frames=gemini_wire.sse_frames(reply), **facts)
    if r.stream == "array":
        return _ok(ctype, frames=gemini_wire.array_frames(reply), **facts)
    return _ok(ctype, gemini_wire.generate_body(reply), **facts)


RENDERERS = {
    D_ANTHROPIC: _render_anthropic,
    D_OPENAI_CHAT: _render_openai_chat,
    D_OPENAI_RESPONSES: _render_openai_responses,
    D_GEMINI: _render_gemini,
}


def render(r: Route, reply: Reply) -> Response:
    """The provider's answer for a routed request."""
    return RENDERERS[r.dialect](r, reply)


def _parse_body(raw: bytes, headers: dict[str, str]) -> Any:
    encoding = headers.get("content-encoding", "").strip().lower()
    try:
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        elif encoding not in ("", "identity"):
            return None  # zstd/br: kept in raw_body only
        return json.loads(raw) if raw.strip() else None
    except (ValueError, OSError, zlib.error):
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms to every small response.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; the Exchange records are the log

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    # --- request ---

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        fake = self.server.fake
        raw = self._read_body()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = _parse_body(raw, headers)
        ex = Exchange(self.command, self.path, headers, list(self.headers.items()), raw, body)
        ex.auth = credentials(headers, query)
        r = route(self.command, url.path, query, headers, body)
        if r is not None:
            ex.dialect, ex.operation, ex.model, ex.stream = r.dialect, r.operation, r.model, r.stream
        settings, seq = fake._begin(ex, counts_for_errors=r is not None)
        try:
            self._respond(ex, r, settings, seq)
        finally:
            ex.finished = time.monotonic()
            ex.done.set()

    def _respond(self, ex: Exchange, r: Route | None, s: Settings, seq: int) -> None:
        if s.latency and not self._pause(s.latency, ex):
            return
        if s.hang and not self._stall(ex, lambda: bool(self.server.fake.hang)):
            return
        if r is None:
            body = b"" if self.command == "HEAD" else b'{"error":{"message":"Not Found","code":404}}'
            self._send_whole(ex, Response(404, "application/json", body), s)
            return
        request_id = f"req_011FAKE{seq:016x}"
        extra = _provider_headers(r.dialect, request_id)
        if s.require_key is not None and ex.credential != s.require_key:
            self._send_whole(ex, render_auth_failure(r.dialect, bool(ex.auth), request_id), s, extra)
            return
        if s.error_status is not None:
            resp = render_error(r.dialect, s.error_status, s.error_message, request_id)
            resp.headers += list(s.error_headers.items())
            self._send_whole(ex, resp, s, extra)
            return
        reply = self._reply(ex, r, s, seq)
        resp = render(r, reply)
        ex.scenario, ex.usage = reply.scenario, reply.usage
        ex.reported_usage, ex.stop_reason = resp.reported_usage, resp.stop_reason
        if resp.frames is not None and s.stream_error_after is not None:
            resp.frames = stream_error_frames(r, s.error_message, resp.frames, s.stream_error_after, request_id)
            ex.reported_usage, ex.stop_reason = None, "error"  # the usage frame never goes out
        if resp.frames is None:
            self._send_whole(ex, resp, s, extra)
        else:
            self._send_stream(ex, resp, s, extra)

    def _reply(self, ex: Exchange, r: Route, s: Settings, seq: int) -> Reply:
        provider = PROVIDER_OF[r.dialect]
        text = s.text if s.text is not None else DEFAULT_TEXT.format(provider=provider)
        body = ex.body if isinstance(ex.body, dict) else {}
        return Reply(
            model=s.model or r.model or "fake-model",
            scenario=pick_scenario(r.dialect, body, text),
            usage=s.usage,
            text_deltas=s.text_deltas,
            tool_arg_pieces=s.tool_arg_pieces,
            seq=seq,
            created=int(time.time()),
            body=body,
            headers=ex.headers,
        )

    # --- response ---

    def _head(self, ex: Exchange, status: int, headers: list[tuple[str, str]]) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = {529: "Overloaded"}.get(status, "")
        ex.status = status
        ex.response_headers = [("date", formatdate(usegmt=True))] + headers
        if self.close_connection:
            ex.response_headers.append(("connection", "close"))
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in ex.response_headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_whole(
        self, ex: Exchange, resp: Response, s: Settings, extra: list[tuple[str, str]] | None = None
    ) -> None:
        body = resp.body
        headers = [("content-type", resp.content_type), ("content-length", str(len(body)))]
        headers += (extra or []) + resp.headers
        head = self._head(ex, resp.status, headers)
        if self.command == "HEAD":
            body = b""
        if s.truncate_after is not None and body:
            # A dropped upstream mid-body: the promised Content-Length never arrives.
            body = body[: len(body) // 2]
            ex.truncated = True
        # Recorded before the write: the client may read it, and a test look, before write() returns.
        ex.sent += body
        if self._write(ex, head + body):
            ex.complete = not ex.truncated
        if ex.truncated:
            self.close_connection = True

    def _send_stream(self, ex: Exchange, resp: Response, s: Settings, extra: list[tuple[str, str]]) -> None:
        frames = resp.frames or []
        headers = [("content-type", resp.content_type), ("transfer-encoding", "chunked")]
        if resp.content_type.startswith("text/event-stream"):
            headers.append(("cache-control", "no-cache"))
        # The head goes out with the first event: one write, one packet.
        pending = self._head(ex, resp.status, headers + extra + resp.headers)
        for i, frame in enumerate(frames):
            held_back = (s.truncate_after is not None and i >= s.truncate_after) or (
                s.hang_after is not None and i >= s.hang_after
            )
            if i and s.delay or held_back:
                if pending and not self._write(ex, pending):
                    return
                pending = b""
                if i and s.delay and not self._pause(s.delay, ex):
                    return
            if s.truncate_after is not None and i >= s.truncate_after:
                ex.truncated = True
                self.close_connection = True  # no terminal chunk: the client sees a cut stream
                return
            if s.hang_after is not None and i >= s.hang_after:
                if not self._stall(ex, lambda: self.server.fake.hang_after is not None):
                    return
            last = i == len(frames) - 1
            data = pending + b"%x\r\n" % len(frame) + frame + b"\r\n" + (b"0\r\n\r\n" if last else b"")
            pending = b""
            ex.frames.append(frame)
            ex.sent += frame
            if not self._write(ex, data):
                return
        if not frames and not self._write(ex, pending + b"0\r\n\r\n"):
            return
        ex.complete = True

    def _write(self, ex: Exchange, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            ex.client_disconnected = True
            self.close_connection = True
            return False

    def _pause(self, seconds: float, ex: Exchange) -> bool:
        """Sleep while watching the socket; False if the client hung up or the fake is closing."""
        deadline = time.monotonic() + seconds
        stopping = self.server.fake._stopping
        while (remaining := deadline - time.monotonic()) > 0:
            if stopping.is_set():
                self.close_connection = True
                return False
            readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peeked = b""
                if not peeked:
                    ex.client_disconnected = True
                    self.close_connection = True
                    return False
                time.sleep(min(remaining, 0.05))  # a pipelined request waits its turn
        return True

    def _stall(self, ex: Exchange, still: Any) -> bool:
        """Answer nothing while `still()` holds; False if the client hung up or the fake is closing."""
        while still():
            if not self._pause(0.05, ex):
                return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeProvider) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handlers parked on idle keep-alive sockets so their threads end."""
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeProvider:
    """The fake, on 127.0.0.1 and a free port unless told otherwise. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._seq = 0
        self._errors_sent = 0
        self.exchanges: list[Exchange] = []
        self._defaults = Settings(**settings)
        self.reset()
        self._server = _Server((host, port), self)
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    # Settings live as plain attributes (fp.delay = 0.01); declared here for type checkers.
    text: str | None
    text_deltas: int
    tool_arg_pieces: int
    usage: FakeUsage
    model: str | None
    latency: float
    delay: float
    truncate_after: int | None
    hang: bool
    hang_after: int | None
    stream_error_after: int | None
    error_status: int | None
    error_message: str | None
    error_times: int | None
    error_headers: dict[str, str]
    require_key: str | None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeProvider:
        if self._thread is None:
            # A short poll interval keeps close() fast; the loop costs nothing measurable.
            serve = self._server.serve_forever
            self._thread = threading.Thread(target=serve, args=(0.05,), name=f"fake:{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- overrides ---

    def configure(self, **changes: Any) -> None:
        """Set several overrides at once, atomically with respect to requests."""
        unknown = set(changes) - set(SETTING_NAMES)
        if unknown:
            raise TypeError(f"unknown FakeProvider setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for name, value in changes.items():
                object.__setattr__(self, name, value)
            if "error_status" in changes or "error_times" in changes:
                self._errors_sent = 0

    def reset(self) -> None:
        """Back to the settings given to the constructor."""
        defaults = self._defaults
        values = {name: getattr(defaults, name) for name in SETTING_NAMES}
        values["error_headers"] = dict(defaults.error_headers)
        self.configure(**values)

    def _begin(self, ex: Exchange, counts_for_errors: bool) -> tuple[Settings, int]:
        """Record the exchange and take this request's snapshot of the settings."""
        with self._lock:
            self.exchanges.append(ex)
            self._seq += 1
            s = Settings(**{name: getattr(self, name) for name in SETTING_NAMES})
            if s.error_status is not None and counts_for_errors:
                if s.error_times is not None and self._errors_sent >= s.error_times:
                    s.error_status = None
                else:
                    self._errors_sent += 1
            return s, self._seq

    # --- records ---

    @property
    def requests(self) -> list[Exchange]:
        """Alias of `exchanges`."""
        return self.exchanges

    @property
    def last(self) -> Exchange:
        """The latest exchange, once finished (waits up to 2 s, then returns it as it is).

        A client can hold the whole response while the fake's thread has not yet
        marked it `complete`; waiting here keeps assertions free of that race.
        """
        with self._lock:
            if not self.exchanges:
                raise LookupError("the fake provider has received no request")
            ex = self.exchanges[-1]
        ex.done.wait(2.0)
        return ex

    def generate_exchanges(self) -> list[Exchange]:
        """The billable calls only (no HEAD /, model lists, token counts)."""
        with self._lock:
            return [ex for ex in self.exchanges if ex.operation == GENERATE]

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Exchange]:
        """Wait until `count` exchanges have been received and finished (responses written or dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                current = list(self.exchanges)
            if len(current) >= count and all(ex.done.is_set() for ex in current[:count]):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake provider: {len(current)} of {count} exchanges after {timeout}s")
            time.sleep(0.005)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.providers", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between stream events")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the response head")
    parser.add_argument("--text-deltas", type=int, default=3)
    parser.add_argument("--text", default=None)
    parser.add_argument("--require-key", default=None)
    parser.add_argument("--keep", action="store_true", help="keep exchange records (grows memory under load)")
    args = parser.parse_args(argv)
    fp = FakeProvider(
        args.host,
        args.port,
        delay=args.delay,
        latency=args.latency,
        text_deltas=args.text_deltas,
        text=args.text,
        require_key=args.require_key,
    )
    with fp:
        print(f"fake provider listening on {fp.base_url}", flush=True)
        try:
            while True:
                time.sleep(1)
                if not args.keep:
                    fp.clear()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
