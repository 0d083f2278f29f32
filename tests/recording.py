"""An HTTP transport that keeps the exact body bytes each response delivered to the client.

The Anthropic and OpenAI SDKs now run on `httpx2`, google-genai on `httpx`; the
same recorder is built for either module.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any


class Recorder:
    """What the client's transport saw, in request order."""

    def __init__(self) -> None:
        self.bodies: list[bytearray] = []
        self.response_headers: list[dict[str, str]] = []
        self._clients: list[Any] = []

    @property
    def last(self) -> bytes:
        return bytes(self.bodies[-1])

    def transport(self, httpx_module: ModuleType) -> Any:
        recorder = self

        class RecordingStream(httpx_module.SyncByteStream):  # type: ignore[misc,name-defined]
            def __init__(self, inner: Any, sink: bytearray):
                self._inner = inner
                self._sink = sink

            def __iter__(self) -> Iterator[bytes]:
                for chunk in self._inner:
                    self._sink.extend(chunk)
                    yield chunk

            def close(self) -> None:
                self._inner.close()

        class RecordingTransport(httpx_module.HTTPTransport):  # type: ignore[misc,name-defined]
            def handle_request(self, request: Any) -> Any:
                response = super().handle_request(request)
                sink = bytearray()
                recorder.bodies.append(sink)
                recorder.response_headers.append({k.lower(): v for k, v in response.headers.items()})
                response.stream = RecordingStream(response.stream, sink)
                return response

        return RecordingTransport()

    def client(self, httpx_module: ModuleType) -> Any:
        client = httpx_module.Client(transport=self.transport(httpx_module))
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
