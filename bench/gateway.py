"""Gateway overhead: the real agent (full pipeline) vs a bare no-op mitmproxy vs the direct call.

One run starts, on loopback only:
  * a minimal asyncio HTTP/1.1 upstream speaking Anthropic JSON and SSE (TCP_NODELAY,
    keep-alive; `--upstream fake` uses tests/fakes/providers.py instead),
  * the real agent (`python -m agent.cli run`, GOVERNOR_* env) on a governance bundle
    with policy rules (tools, MCP, URLs, models), aliases, two budgets and a rate limit,
    so guard → auth → parse → policy → budget (ledger) → route → meter → record all run,
  * a bare no-op mitmproxy: a minimal Master (core, proxyserver, next_layer, tlsconfig,
    errorcheck) in reverse mode, in its own process, with the agent's options (lazy
    connection strategy, body_size_limit, keep_host_header) and one addon setting
    `flow.response.stream = True` (without it mitmproxy buffers an SSE stream whole),

and prints side by side: added latency p50/p99 at concurrency 1 and 16 against the
direct call (interleaved rounds, so machine noise hits all three alike), requests/s,
added time to the first streamed SSE chunk, CPU per request, idle and loaded RSS,
and spawn-to-ready (median of 5).

The load generator is this process: raw asyncio sockets, one request per connection
at a time, pre-built request bytes. It shares the 2 cores with the upstream and the
proxy; its own CPU share is printed per cell so that can be judged.

    python3 -m uv run python bench/gateway.py                    # the full run (~2.5 min)
    python3 -m uv run python bench/gateway.py --quick            # a smoke run (~40 s)
    python3 -m uv run --with py-spy python bench/gateway.py --profile   # py-spy the agent under load
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_KEY = "gvn-bench-local-key"
MODEL = "claude-sonnet-4-5"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------
# The upstream: a minimal asyncio HTTP/1.1 server (role `upstream`, its own process)

ANTHROPIC_JSON = json.dumps(
    {
        "id": "msg_bench_0001",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello from the bench upstream. " * 4}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 812, "output_tokens": 42, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
    },
    separators=(",", ":"),
).encode()


def _sse_events(n: int) -> list[bytes]:
    def ev(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    deltas = max(1, n - 5)
    out = [
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_bench_sse", "type": "message", "role": "assistant", "model": MODEL, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 812, "output_tokens": 1}}}),
        ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    out += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": f"tok{i} "}}) for i in range(deltas)]
    out += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": deltas}}),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return out


def _content_length(head: bytes) -> int:
    """Content-Length from a lower-cased header block (0 when absent)."""
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    nl = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : nl if nl > 0 else None])


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class UpstreamProtocol(asyncio.Protocol):
    events: list[bytes] = []
    gap_s: float = 0.005

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.busy = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = _content_length(head)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/v1/messages") and b'"stream":true' in body:
                self.busy = True
                asyncio.get_running_loop().create_task(self._stream())
                return
            payload = ANTHROPIC_JSON if path.startswith(b"/v1/") else b'{"status":"ok"}'
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )

    async def _stream(self) -> None:
        write = self.transport.write
        write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
              b"transfer-encoding: chunked\r\n\r\n")
        for i, event in enumerate(self.events):
            if i:
                await asyncio.sleep(self.gap_s)
            if self.transport.is_closing():
                return
            write(_chunk(event))
        write(b"0\r\n\r\n")
        self.busy = False
        self._next()


async def upstream_main(port: int, events: int, gap_ms: float) -> None:
    UpstreamProtocol.events = _sse_events(events)
    UpstreamProtocol.gap_s = gap_ms / 1000
    server = await asyncio.get_running_loop().create_server(UpstreamProtocol, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------------------
# The no-op proxy (role `noop`, its own process)


async def noop_main(port: int, upstream_port: int, confdir: str) -> None:
    from mitmproxy import http, options
    from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
    from mitmproxy.master import Master

    class Stream:  # the one thing a no-op must do for SSE to stream at all
        def responseheaders(self, flow: http.HTTPFlow) -> None:
            assert flow.response is not None
            flow.response.stream = True

    master = Master(options.Options(mode=[f"reverse:http://127.0.0.1:{upstream_port}@{port}"],
                                    listen_host="127.0.0.1", confdir=confdir))
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      errorcheck.ErrorCheck())
    master.options.update(connection_strategy="lazy", body_size_limit=str(32 * 1024 * 1024), keep_host_header=True)
    master.addons.add(Stream())
    await master.run()


# --------------------------------------------------------------------------------------
# The load generator: raw asyncio sockets


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.head_end = -1
        self.length = 0
        self.chunked = False
        self.pos = 0
        self.t_head = self.t_first = 0.0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if self.head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = self.pos = end + 4
            self.t_head = now
            head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            if b"\r\ntransfer-encoding: chunked" in head:
                self.chunked = True
            else:
                self.length = _content_length(head)
        if not self.t_first and len(buf) > self.head_end:
            self.t_first = now
        if self.chunked:
            while True:
                nl = buf.find(b"\r\n", self.pos)
                if nl < 0:
                    return
                size = int(bytes(buf[self.pos : nl]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) < nl + 4:
                        return
                    break
                if len(buf) < nl + 2 + size + 2:
                    return
                self.pos = nl + 2 + size + 2
        elif len(buf) - self.head_end < self.length:
            return
        result = (now, self.status, self.t_head, self.t_first or now)
        buf.clear()
        self._reset()
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def request(self, data: bytes) -> tuple[float, float, int, float, float]:
        self.fut = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.transport.write(data)
        done, status, t_head, t_first = await self.fut
        return t0, done, status, t_head, t_first


async def connect(port: int) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, "127.0.0.1", port)
    return conn


def build_request(port: int, body: bytes) -> bytes:
    return (
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nuser-agent: claude-cli/2.0.0 (bench)\r\n"
        b"authorization: Bearer %s\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        b"accept: application/json\r\ncontent-length: %d\r\n\r\n%s" % (port, LOCAL_KEY.encode(), len(body), body)
    )


def request_body(stream: bool, pad_kb: int) -> bytes:
    tool = lambda name, desc: {"name": name, "description": desc, "input_schema": {  # noqa: E731
        "type": "object", "properties": {"path": {"type": "string", "description": "an absolute path"}}, "required": ["path"]}}
    body = {
        "model": "sonnet",  # an alias in the bundle: resolved to claude-sonnet-4-5, body re-serialised
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are a coding assistant. " + "x" * (pad_kb * 1024)}],
        "tools": [tool("Read", "read a file"), tool("Grep", "search files"), tool("Edit", "edit a file")],
        "messages": [
            {"role": "user", "content": "Refactor the parser in agent/core/dialects.py to avoid the second pass."},
            {"role": "assistant", "content": [{"type": "text", "text": "Reading the file first."}]},
            {"role": "user", "content": "Go ahead."},
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------
# Process handling and /proc readings


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str = "/startupz", timeout: float = 0.5) -> int:
    """Status of GET `path`, 0 when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % (path.encode(), port))
            data = s.recv(64)
            return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        return 0


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 20.0, interval: float = 0.005, any_answer: bool = False) -> float:
    """Spawn-to-ready: GET /startupz answers 200 (the agent), or answers at all (`any_answer`:
    the upstream; the no-op proxy, whose answer is the upstream's, forwarded)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {proc.args}")
        status = probe(port)
        if status == 200 or (any_answer and status):
            return time.perf_counter()
        time.sleep(interval)
    raise RuntimeError(f"not ready within {timeout}s: {proc.args}")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


BUNDLE = {
    "revision": "bench-1",
    "vk_id": "vk_bench",
    "principal_id": "u_bench",
    "project_id": "proj_bench",
    "organization_id": "org_bench",
    "model_aliases": {"sonnet": MODEL},
    "models_allowed": ["claude-*", "gpt-*", "gemini-*"],
    "policy_rules": {
        "tools": {"deny": ["^Bash$", "^WebFetch$"], "action": "reject"},
        "mcp": {"deny": ["^evil-.*"]},
        "urls": {"deny": [r"(^|\.)evil\.example$"]},
        "models": {"deny": [r"^gpt-3\.5"]},
    },
    "budgets": [
        {"id": "bud_user_month", "scope": "principal", "scope_id": "u_bench", "principal_id": "u_bench", "window": "month",
         "limit_micro_usd": 10**13, "spent_micro_usd": 0, "resets_at": int(time.time()) + 20 * 86400, "on_breach": "block"},
        {"id": "bud_proj_day", "scope": "project", "scope_id": "proj_bench", "window": "day",
         "limit_micro_usd": 10**13, "spent_micro_usd": 0, "resets_at": int(time.time()) + 86400, "on_breach": "warn"},
    ],
    "rate_limits": {"rpm": 10**8},
}


class Procs:
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp, self.args = tmp, args
        self.all: list[subprocess.Popen] = []
        (tmp / "bundle.json").write_text(json.dumps(BUNDLE))

    def spawn(self, argv: list[str], env: dict[str, str] | None = None, log: str = "log") -> subprocess.Popen:
        out = open(self.tmp / f"{log}.log", "ab")
        # An installed agent runs from compiled bytecode (pip and PyInstaller compile it); this
        # machine's environment sets PYTHONDONTWRITEBYTECODE and uv installs none, which would
        # make every spawn compile mitmproxy from source. Cache it in the scratch dir, per role,
        # so each role's first start is the cold one.
        full = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        full["PYTHONPYCACHEPREFIX"] = str(self.tmp / f"pycache-{log}")
        full.update(env or {})
        proc = subprocess.Popen(argv, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.all.append(proc)
        return proc

    def upstream(self, port: int) -> subprocess.Popen:
        if self.args.upstream == "fake":
            return self.spawn([sys.executable, "-m", "tests.fakes.providers", "--port", str(port), "--delay",
                               str(self.args.sse_gap_ms / 1000), "--text-deltas", str(max(1, self.args.sse_events - 5))],
                              log="upstream")
        return self.spawn([sys.executable, __file__, "--role", "upstream", "--port", str(port),
                           "--sse-events", str(self.args.sse_events), "--sse-gap-ms", str(self.args.sse_gap_ms)], log="upstream")

    def agent_env(self, port: int, upstream_port: int, data_dir: Path) -> dict[str, str]:
        env = {
            "GOVERNOR_LISTEN": f"127.0.0.1:{port}",
            "GOVERNOR_DATA_DIR": str(data_dir),
            "GOVERNOR_CONFIG": str(data_dir / "config.toml"),
            "GOVERNOR_LOCAL_KEY": LOCAL_KEY,
            "GOVERNOR_BUNDLE": str(self.tmp / "bundle.json"),
            "GOVERNOR_DRAIN_PRE_WAIT_S": "0",
            "GOVERNOR_DRAIN_TIMEOUT_S": "2",
        }
        for provider in ("ANTHROPIC", "OPENAI", "GEMINI"):
            env[f"GOVERNOR_{provider}_BASE_URL"] = f"http://127.0.0.1:{upstream_port}"
            env[f"GOVERNOR_{provider}_API_KEY"] = f"sk-bench-{provider.lower()}"
        return env

    def agent(self, port: int, upstream_port: int, data_dir: Path, wrap: list[str] | None = None,
              argv: list[str] | None = None) -> subprocess.Popen:
        return self.spawn([*(wrap or []), sys.executable, *(argv or ["-m", "agent.cli", "run"])],
                          self.agent_env(port, upstream_port, data_dir), log="agent")

    def noop(self, port: int, upstream_port: int) -> subprocess.Popen:
        return self.spawn([sys.executable, __file__, "--role", "noop", "--port", str(port), "--upstream-port",
                           str(upstream_port), "--confdir", str(self.tmp / "noop-conf")], log="noop")

    def close(self) -> None:
        for proc in self.all:
            stop(proc, 5)


# --------------------------------------------------------------------------------------
# Measurement cells


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


class Target:
    def __init__(self, name: str, port: int, pid: int | None) -> None:
        self.name, self.port, self.pid = name, port, pid
        self.lat: dict[int, list[float]] = collections.defaultdict(list)  # concurrency -> seconds
        self.done: dict[int, int] = collections.Counter()
        self.wall: dict[int, float] = collections.Counter()
        self.cpu: dict[str, float] = collections.Counter()  # proxy CPU seconds per cell kind
        self.reqs: dict[str, int] = collections.Counter()
        self.client_cpu: dict[str, float] = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.sse_head: list[float] = []
        self.sse_first: list[float] = []
        self.sse_total: list[float] = []


class Cell:
    """CPU of the proxy (if any) and of this client over one cell."""

    def __init__(self, target: Target, kind: str) -> None:
        self.target, self.kind = target, kind

    def __enter__(self) -> Cell:
        self.c0 = time.process_time()
        self.p0 = proc_cpu(self.target.pid) if self.target.pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.target.client_cpu[self.kind] += time.process_time() - self.c0
        if self.target.pid:
            self.target.cpu[self.kind] += proc_cpu(self.target.pid) - self.p0


async def run_c1(target: Target, req: bytes, n: int, warm: int = 20) -> None:
    conn = await connect(target.port)
    for _ in range(warm):
        await conn.request(req)
    with Cell(target, "c1"):
        t_start = time.perf_counter()
        for _ in range(n):
            t0, t1, status, _, _ = await conn.request(req)
            if status != 200:
                target.errors[status] += 1
            target.lat[1].append(t1 - t0)
        target.wall[1] += time.perf_counter() - t_start
        target.done[1] += n
        target.reqs["c1"] += n
    conn.transport.close()


async def run_cn(target: Target, req: bytes, conc: int, seconds: float) -> None:
    conns = [await connect(target.port) for _ in range(conc)]
    await asyncio.gather(*(c.request(req) for c in conns))  # warm every connection
    deadline = 0.0
    count = 0

    async def worker(conn: Conn) -> None:
        nonlocal count
        lat = target.lat[conc]
        while time.perf_counter() < deadline:
            t0, t1, status, _, _ = await conn.request(req)
            if status != 200:
                target.errors[status] += 1
            lat.append(t1 - t0)
            count += 1

    with Cell(target, f"c{conc}"):
        t_start = time.perf_counter()
        deadline = t_start + seconds
        await asyncio.gather(*(worker(c) for c in conns))
        target.wall[conc] += time.perf_counter() - t_start
        target.done[conc] += count
        target.reqs[f"c{conc}"] += count
    for c in conns:
        c.transport.close()


async def run_sse(target: Target, req: bytes, n: int) -> None:
    conn = await connect(target.port)
    await conn.request(req)
    with Cell(target, "sse"):
        for _ in range(n):
            t0, t1, status, t_head, t_first = await conn.request(req)
            if status != 200:
                target.errors[status] += 1
            target.sse_head.append(t_head - t0)
            target.sse_first.append(t_first - t0)
            target.sse_total.append(t1 - t0)
        target.reqs["sse"] += n
    conn.transport.close()


def startup_trials(procs: Procs, kind: str, upstream_port: int, n: int, data_dir: Path) -> tuple[float, list[float]]:
    """(the first, cold start; then `n` warm spawn-to-ready times), seconds."""
    times = []
    for _ in range(n + 1):
        port = free_port()
        t0 = time.perf_counter()
        proc = procs.agent(port, upstream_port, data_dir) if kind == "agent" else procs.noop(port, upstream_port)
        times.append(wait_ready(proc, port, any_answer=kind != "agent") - t0)
        stop(proc)
        procs.all.remove(proc)
    return times[0], times[1:]


# --------------------------------------------------------------------------------------
# Report


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def report(targets: dict[str, Target], args: argparse.Namespace, mem: dict, ready: dict, conc: int) -> None:
    d = targets["direct"]
    print(f"\n## Results ({args.rounds} interleaved rounds; c1: {args.c1_requests} req/round; "
          f"c{conc}: {args.cn_seconds:.1f} s/round; SSE: {args.sse_streams} streams/round of "
          f"{args.sse_events} events {args.sse_gap_ms:g} ms apart; body {len(request_body(False, args.pad_kb))} B)\n")
    print("| | direct | no-op mitmproxy | Governor agent | agent vs no-op |")
    print("|---|---|---|---|---|")

    def row(label: str, fn, fmt=lambda v: f"{v}", vs=None) -> None:
        vals = {name: fn(t) for name, t in targets.items()}
        cmp = vs(vals["noop"], vals["agent"]) if vs else ""
        print(f"| {label} | " + " | ".join(fmt(vals[n]) if vals[n] is not None else "–" for n in targets) + f" | {cmp} |")

    ratio = lambda a, b: f"{(b / a - 1) * 100:+.0f} %" if a else ""  # noqa: E731
    row("p50 c=1 (ms)", lambda t: pct(t.lat[1], 50), ms)
    row("p99 c=1 (ms)", lambda t: pct(t.lat[1], 99), ms)
    row("**added p50 c=1** (ms)", lambda t: pct(t.lat[1], 50) - pct(d.lat[1], 50) if t is not d else None, ms, ratio)
    row("added p99 c=1 (ms)", lambda t: pct(t.lat[1], 99) - pct(d.lat[1], 99) if t is not d else None, ms, ratio)
    row(f"p50 c={conc} (ms)", lambda t: pct(t.lat[conc], 50), ms)
    row(f"p99 c={conc} (ms)", lambda t: pct(t.lat[conc], 99), ms)
    row(f"added p50 c={conc} (ms)", lambda t: pct(t.lat[conc], 50) - pct(d.lat[conc], 50) if t is not d else None, ms, ratio)
    row(f"added p99 c={conc} (ms)", lambda t: pct(t.lat[conc], 99) - pct(d.lat[conc], 99) if t is not d else None, ms, ratio)
    row("req/s c=1", lambda t: t.done[1] / t.wall[1], lambda v: f"{v:,.0f}", lambda a, b: ratio(a, b))
    row(f"**req/s c={conc}**", lambda t: t.done[conc] / t.wall[conc], lambda v: f"{v:,.0f}", lambda a, b: ratio(a, b))
    row("proxy CPU/request c=1 (µs)", lambda t: t.cpu["c1"] / t.reqs["c1"] * 1e6 if t.pid else None,
        lambda v: f"{v:,.0f}", ratio)
    row(f"proxy CPU/request c={conc} (µs)", lambda t: t.cpu[f"c{conc}"] / t.reqs[f"c{conc}"] * 1e6 if t.pid else None,
        lambda v: f"{v:,.0f}", ratio)
    row(f"proxy CPU busy c={conc}", lambda t: t.cpu[f"c{conc}"] / t.wall[conc] if t.pid else None, lambda v: f"{v:.0%}")
    row("bench client CPU c=1", lambda t: t.client_cpu["c1"] / t.wall[1], lambda v: f"{v:.0%}")
    row(f"bench client CPU c={conc}", lambda t: t.client_cpu[f"c{conc}"] / t.wall[conc], lambda v: f"{v:.0%}")
    row("SSE headers p50 (ms)", lambda t: pct(t.sse_head, 50), ms)
    row("SSE first chunk p50 (ms)", lambda t: pct(t.sse_first, 50), ms)
    row("SSE first chunk p90 (ms)", lambda t: pct(t.sse_first, 90), ms)
    row("**added first chunk p50** (ms)", lambda t: pct(t.sse_first, 50) - pct(d.sse_first, 50) if t is not d else None, ms, ratio)
    row("SSE stream total p50 (ms)", lambda t: pct(t.sse_total, 50), ms)
    row("RSS at ready (MiB)", lambda t: mem.get(t.name, {}).get("ready"), lambda v: f"{v:.1f}")
    row("**RSS idle after warm-up** (MiB)", lambda t: mem.get(t.name, {}).get("idle"), lambda v: f"{v:.1f}")
    row("RSS peak under load, VmHWM (MiB)", lambda t: mem.get(t.name, {}).get("hwm"), lambda v: f"{v:.1f}")
    row("RSS after load (MiB)", lambda t: mem.get(t.name, {}).get("after"), lambda v: f"{v:.1f}")
    row("spawn→ready, first start (s)", lambda t: ready.get(t.name, (None, None))[0], lambda v: f"{v:.3f}")
    row(f"**spawn→ready, median of {args.startups}** (s)",
        lambda t: statistics.median(ready[t.name][1]) if t.name in ready else None, lambda v: f"{v:.3f}")
    row(f"spawn→ready, min–max of {args.startups} (s)",
        lambda t: ready[t.name][1] if t.name in ready else None, lambda v: f"{min(v):.3f}–{max(v):.3f}")
    errors = {n: dict(t.errors) for n, t in targets.items() if t.errors}
    print(f"\nnon-200 answers: {errors or 'none'}")

    a, n = targets["agent"], targets["noop"]
    checks = [
        ("added p50, c=1", pct(a.lat[1], 50) - pct(d.lat[1], 50), 0.001, "≤ 1.0 ms", ms),
        ("added first SSE chunk p50", pct(a.sse_first, 50) - pct(d.sse_first, 50), 0.002, "≤ 2 ms", ms),
        (f"req/s c={conc}", a.done[conc] / a.wall[conc], -1000, "≥ 1,000", lambda v: f"{v:,.0f}"),
        ("idle RSS", mem["agent"]["idle"], 80, "≤ 80 MiB", lambda v: f"{v:.1f} MiB"),
        ("spawn→ready median", statistics.median(ready["agent"][1]) if ready else None, 0.8, "≤ 0.8 s",
         lambda v: f"{v:.3f} s"),
        ("added p50 c=1 over no-op", (pct(a.lat[1], 50) - pct(d.lat[1], 50)) / max(1e-9, pct(n.lat[1], 50) - pct(d.lat[1], 50)) - 1,
         0.15, "≤ +15 %", lambda v: f"{v * 100:+.0f} %"),
        (f"req/s c={conc} vs no-op", 1 - (a.done[conc] / a.wall[conc]) / (n.done[conc] / n.wall[conc]), 0.15,
         "≥ −15 %", lambda v: f"{-v * 100:+.0f} %"),
    ]
    print("\n| target | bar | measured | |\n|---|---|---|---|")
    for name, value, bar, bar_text, fmt in checks:
        if value is None:
            continue
        ok = value >= -bar if bar < 0 else value <= bar
        print(f"| {name} | {bar_text} | {fmt(value)} | {'hit' if ok else 'MISS'} |")


# --------------------------------------------------------------------------------------
# Main


async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-gw-"))
    procs = Procs(tmp, args)
    conc = args.concurrency
    try:
        up_port, noop_port, agent_port = free_port(), free_port(), free_port()
        up = procs.upstream(up_port)
        wait_ready(up, up_port, any_answer=True)
        print(f"upstream ({args.upstream}) on :{up_port}; scratch dir {tmp}", flush=True)

        # Spawn-to-ready first, while the machine is otherwise quiet.
        ready = {}
        if args.startups:
            ready["agent"] = startup_trials(procs, "agent", up_port, args.startups, tmp / "startup-agent")
            ready["noop"] = startup_trials(procs, "noop", up_port, args.startups, tmp)
            print(f"spawn→ready agent: first {ready['agent'][0]:.3f} s, then {[round(x, 3) for x in ready['agent'][1]]}",
                  flush=True)
            print(f"spawn→ready no-op: first {ready['noop'][0]:.3f} s, then {[round(x, 3) for x in ready['noop'][1]]}",
                  flush=True)

        agent = procs.agent(agent_port, up_port, tmp / "agent-data")
        noop = procs.noop(noop_port, up_port)
        wait_ready(agent, agent_port)
        wait_ready(noop, noop_port, any_answer=True)
        await asyncio.sleep(0.5)
        mem = {"agent": {"ready": proc_mem(agent.pid)["VmRSS"]}, "noop": {"ready": proc_mem(noop.pid)["VmRSS"]}}

        targets = {"direct": Target("direct", up_port, None), "noop": Target("noop", noop_port, noop.pid),
                   "agent": Target("agent", agent_port, agent.pid)}
        plain = {t.name: build_request(t.port, request_body(False, args.pad_kb)) for t in targets.values()}
        streamed = {t.name: build_request(t.port, request_body(True, args.pad_kb)) for t in targets.values()}

        # Warm-up: imports on first use, statement caches, the ledger's pages.
        for t in targets.values():
            await run_c1(Target(t.name, t.port, None), plain[t.name], 200)
            await run_sse(Target(t.name, t.port, None), streamed[t.name], 3)
        await asyncio.sleep(1.0)
        for name, proc in (("agent", agent), ("noop", noop)):
            mem[name]["idle"] = proc_mem(proc.pid)["VmRSS"]

        order = list(targets.values())
        t_run = time.perf_counter()
        for r in range(args.rounds):
            rot = order[r % 3:] + order[: r % 3]
            for t in rot:
                await run_c1(t, plain[t.name], args.c1_requests)
            for t in rot:
                await run_cn(t, plain[t.name], conc, args.cn_seconds)
            for t in rot:
                await run_sse(t, streamed[t.name], args.sse_streams)
            print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t_run:.0f} s)", flush=True)
        for name, proc in (("agent", agent), ("noop", noop)):
            m = proc_mem(proc.pid)
            mem[name]["hwm"], mem[name]["after"] = m["VmHWM"], m["VmRSS"]
        report(targets, args, mem, ready, conc)
    finally:
        procs.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


# --------------------------------------------------------------------------------------
# Profile: py-spy on the agent while it serves c=1, c=N and SSE load


def collapse(raw: Path, top: int) -> None:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    hooks: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].replace(str(ROOT) + "/", "").split("site-packages/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        # drop the process/thread header frames py-spy puts first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        threads["event loop" if frames[0].startswith("_run_module_as_main") else "other threads (store writer, to_thread)"] += n
        own[frames[-1]] += n
        for i, f in enumerate(frames):  # which addon hook (ours or mitmproxy's) the sample is in
            if f.startswith("AddonManager.invoke_addon"):
                hook = next((g for g in frames[i + 1 :] if "addonmanager" not in g and "mitmproxy/utils" not in g), None)
                if hook:
                    hooks[hook] += n
                break
        for f in set(frames):
            inclusive[f] += n
    print(f"\n{total} samples (non-idle) in the agent process: "
          + ", ".join(f"{name} {n / total:.0%}" for name, n in threads.most_common()) + "\n")
    print("### Top inclusive (the function and what it calls)\n\n| % | function (file) |\n|---|---|")
    for f, n in inclusive.most_common(top):
        print(f"| {n / total:5.1%} | `{f}` |")
    print("\n### Addon hooks (inclusive)\n\n| % | hook (file) |\n|---|---|")
    for f, n in hooks.most_common(15):
        print(f"| {n / total:5.1%} | `{f}` |")
    print("\n### Top self time\n\n| % | function (file) |\n|---|---|")
    for f, n in own.most_common(top):
        print(f"| {n / total:5.1%} | `{f}` |")


async def profile(args: argparse.Namespace) -> None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("py-spy not found: run with `python3 -m uv run --with py-spy python bench/gateway.py --profile`")
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-prof-"))
    procs = Procs(tmp, args)
    raw = tmp / "agent.pyspy.txt"
    try:
        up_port, agent_port = free_port(), free_port()
        up = procs.upstream(up_port)
        wait_ready(up, up_port, any_answer=True)
        agent = procs.agent(agent_port, up_port, tmp / "agent-data")
        wait_ready(agent, agent_port)
        target = Target("agent", agent_port, None)
        plain = build_request(agent_port, request_body(False, args.pad_kb))
        streamed = build_request(agent_port, request_body(True, args.pad_kb))
        await run_c1(target, plain, 300)  # warm-up, not sampled
        await run_sse(target, streamed, 3)
        target = Target("agent", agent_port, agent.pid)
        # Attach once the agent is warm, so start-up imports stay out of the profile. Blocking
        # sampling (py-spy pauses the process per sample): slower, but no torn stacks.
        spy = subprocess.Popen([pyspy, "record", "--pid", str(agent.pid), "--rate", str(args.profile_rate), "--format",
                                "raw", "--output", str(raw), "--duration", str(int(args.profile_seconds) + 2)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.all.append(spy)
        await asyncio.sleep(1.0)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.profile_seconds:
            await run_c1(target, plain, 500)
            await run_cn(target, plain, args.concurrency, 2.0)
            await run_sse(target, streamed, 10)
        spy.wait(60)
        print(f"under py-spy: c=1 p50 {pct(target.lat[1], 50) * 1000:.2f} ms; "
              f"c={args.concurrency} {target.done[args.concurrency] / target.wall[args.concurrency]:,.0f} req/s; "
              f"requests sampled: {sum(target.reqs.values())}; agent CPU {sum(target.cpu.values()):.1f} s")
        if spy.returncode:
            sys.exit(f"py-spy failed: {spy.stderr.read().decode() if spy.stderr else ''}")
        collapse(raw, args.profile_top)
        if args.keep:
            print(f"raw stacks: {raw}")
    finally:
        procs.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=["bench", "upstream", "noop"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--confdir", help=argparse.SUPPRESS)
    p.add_argument("--upstream", choices=["asyncio", "fake"], default="asyncio",
                   help="the loopback upstream: this script's asyncio server, or tests/fakes/providers.py")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--c1-requests", type=int, default=600, help="sequential requests per target per round")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--cn-seconds", type=float, default=2.5, help="seconds of concurrent load per target per round")
    p.add_argument("--sse-streams", type=int, default=12, help="SSE streams per target per round")
    p.add_argument("--sse-events", type=int, default=20)
    p.add_argument("--sse-gap-ms", type=float, default=5.0)
    p.add_argument("--pad-kb", type=int, default=1, help="system-prompt padding of the request body, KiB")
    p.add_argument("--startups", type=int, default=5, help="spawn-to-ready trials per proxy (after one cold start)")
    p.add_argument("--quick", action="store_true", help="2 rounds, short cells, 3 startups")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, ledger, profile)")
    p.add_argument("--profile", action="store_true", help="py-spy the agent under load instead of the comparison")
    p.add_argument("--profile-seconds", type=float, default=20.0)
    p.add_argument("--profile-rate", type=int, default=250)
    p.add_argument("--profile-top", type=int, default=30)
    args = p.parse_args()
    if args.role == "upstream":
        asyncio.run(upstream_main(args.port, args.sse_events, args.sse_gap_ms))
    elif args.role == "noop":
        asyncio.run(noop_main(args.port, args.upstream_port, args.confdir))
    elif args.profile:
        asyncio.run(profile(args))
    else:
        if args.quick:
            args.rounds, args.c1_requests, args.cn_seconds, args.sse_streams = 2, 300, 1.5, 6
            args.startups = min(args.startups, 3)
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
