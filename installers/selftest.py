#!/usr/bin/env python3
"""Self-test of a built Governor runtime, the idea of mitmproxy's
release/selftest.py: run the *built* binary, not the source tree.

    python3 installers/selftest.py dist/governor/governor [--version 0.1.0]

1. `governor --version` prints the expected version;
2. `governor run` starts on a free loopback port (own data dir, own config,
   no keychain: the local key comes from the environment);
3. `GET /healthz` answers 200;
4. one Anthropic `POST /v1/messages` goes through the gateway to a tiny
   loopback upstream and comes back unchanged, stamped with
   `X-Langwatch-Gateway-Version`.

Standard library only, so it runs with any python3 against an unpacked
package (`.deb` extracted into a throwaway root, the MSI's files …).
Exit 0 on success; on failure, the reason and the agent's log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCAL_KEY = "gvn-selftest-local-key"
UPSTREAM_KEY = "sk-selftest-upstream"
ANSWER = {
    "id": "msg_selftest",
    "type": "message",
    "role": "assistant",
    "model": "claude-selftest",
    "content": [{"type": "text", "text": "selftest ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Upstream.seen.append({"path": self.path, "x-api-key": self.headers.get("x-api-key", "")})
        body = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def selftest(binary: Path, expect_version: str | None, timeout: float = 30.0) -> None:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=timeout, check=True)
    printed = out.stdout.strip()
    print(f"selftest: {printed}")
    if expect_version and printed != f"governor {expect_version}":
        raise SystemExit(f"selftest: --version printed {printed!r}, expected 'governor {expect_version}'")

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="governor-selftest-") as tmp:
        data = Path(tmp) / "data"
        env = {
            **os.environ,
            "GOVERNOR_LISTEN": f"127.0.0.1:{port}",
            "GOVERNOR_DATA_DIR": str(data),
            "GOVERNOR_CONFIG": str(Path(tmp) / "config.toml"),
            "GOVERNOR_MANAGED_DIR": str(Path(tmp) / "managed"),  # never the machine's /etc/governor
            "GOVERNOR_LOCAL_KEY": LOCAL_KEY,
            "GOVERNOR_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{upstream.server_address[1]}",
            "GOVERNOR_ANTHROPIC_API_KEY": UPSTREAM_KEY,
            "GOVERNOR_DRAIN_PRE_WAIT_S": "0",
        }
        log_path = Path(tmp) / "agent.log"
        with log_path.open("wb") as log:
            agent = subprocess.Popen([str(binary), "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _exercise(agent, port, expect_version, timeout)
        except BaseException:
            print(log_path.read_text(errors="replace"), file=sys.stderr)
            raise
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            upstream.shutdown()
            upstream.server_close()
    print("selftest: ok")


def _exercise(agent: subprocess.Popen[bytes], port: int, expect_version: str | None, timeout: float) -> None:
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while True:
        if agent.poll() is not None:
            raise SystemExit(f"selftest: agent exited with {agent.returncode}")
        try:
            status, _, body = _get(base + "/healthz", timeout=0.5)
            if status == 200:
                break
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise SystemExit(f"selftest: no /healthz within {timeout}s")
        time.sleep(0.05)
    print(f"selftest: /healthz 200 after {time.monotonic() - started:.2f}s: {body.decode()}")

    request = urllib.request.Request(
        base + "/v1/messages",
        data=json.dumps(
            {"model": "claude-selftest", "max_tokens": 16, "messages": [{"role": "user", "content": "ping"}]}
        ).encode(),
        headers={"Content-Type": "application/json", "x-api-key": LOCAL_KEY, "anthropic-version": "2023-06-01"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, headers, body = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"selftest: proxied call answered {e.code}: {e.read()[:500]!r}") from None
    answer = json.loads(body)
    if status != 200 or answer.get("content") != ANSWER["content"]:
        raise SystemExit(f"selftest: proxied call answered {status}: {body[:500]!r}")
    if not _Upstream.seen or _Upstream.seen[-1]["x-api-key"] != UPSTREAM_KEY:
        raise SystemExit(f"selftest: the upstream did not see the call with its own key: {_Upstream.seen}")
    stamped = {k.lower(): v for k, v in headers.items()}.get("x-langwatch-gateway-version")
    if expect_version and stamped != expect_version:
        raise SystemExit(f"selftest: X-Langwatch-Gateway-Version {stamped!r}, expected {expect_version!r}")
    print(f"selftest: POST /v1/messages 200 through the gateway (gateway version {stamped})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=Path, help="the built `governor` executable")
    parser.add_argument("--version", dest="expect_version", help="the version the build must report")
    args = parser.parse_args()
    selftest(args.binary, args.expect_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
