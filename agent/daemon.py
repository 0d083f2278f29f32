"""The agent process: a lean mitmproxy Master with the governance pipeline.

Only the addons a reverse gateway needs are loaded (no flow store, no dump,
no script loader): a no-op DumpMaster costs about 1.6x a minimal Master per
request (shared/reference/mitmproxy-pystray-notes.md §2–3).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

from mitmproxy import http, options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

from addons.auth import Auth
from addons.budget import Budget
from addons.guard import Guard
from addons.intercept import Intercept
from addons.meter import Meter
from addons.parse import Parse
from addons.policy import Policy
from addons.record import Record
from addons.route import Route, initial_credentials
from agent import maintenance, secrets
from agent.bundlefile import BundleFile
from agent.config import Settings
from agent.core.bundle import Bundle, BundleError, parse_bundle
from agent.core.dialects import Dialect, Provider
from agent.core.errors import GatewayError, render
from agent.core.routing import INTERCEPT_HOSTS
from agent.core.tracing import start_trace
from agent.core.upstream import Upstream
from agent.forwarder import Forwarder, azure_key, build_router
from agent.orgsync import OrgConnection, control_plane_url
from agent.pac import pac
from agent.state import GatewayState
from agent.store import Store
from agent.trustca import ensure_ca, system_bundle
from agent.version import VERSION

log = logging.getLogger("governor.daemon")

_PROTOCOL_ERROR_CODES = {400: "bad_request", 413: "payload_too_large", 502: "provider_error", 504: "provider_timeout"}


def _protocol_error_response(status_code: int, message: str = "") -> bytes:
    """mitmproxy's own error page (connect failure, body over the cap, malformed
    HTTP) as our JSON envelope instead of HTML.

    mitmproxy renders these below the addon layer with no flow at hand, so the
    dialect is unknown: the Anthropic shape is used, which OpenAI and Google
    clients also parse (they read `error.message`).
    """
    code = _PROTOCOL_ERROR_CODES.get(status_code, "provider_error")
    if status_code == 413:
        message = "request body exceeds the gateway's size limit (GOVERNOR_BODY_LIMIT_BYTES)"
    error = GatewayError(code, message or code, status=status_code)
    status, body, headers = render(error, Dialect.ANTHROPIC)
    headers.update(start_trace(None).headers(VERSION))
    headers["Connection"] = "close"
    return bytes(http1.assemble_response(http.Response.make(status, body, headers)))


def build_state(settings: Settings, store: Store) -> GatewayState:
    upstreams = {p: Upstream.parse(settings.base_url(p)) for p in Provider}
    keys: dict[Provider, str | None] = {}
    for provider in Provider:
        configured = settings.api_key(provider)
        keys[provider] = (
            configured.get_secret_value() if configured else secrets.get_secret(f"{provider.value}_api_key", settings.data_dir)
        )
    configured_local = settings.local_key.get_secret_value() if settings.local_key else None
    return GatewayState(
        settings=settings,
        version=VERSION,
        local_key=secrets.local_key(configured_local, settings.data_dir),
        upstreams=upstreams,
        provider_keys=keys,
        store=store,
        routing=build_router(settings),
    )


async def restore_governance(state: GatewayState) -> BundleFile | None:
    """Governance in force from the first request: the last good bundle, then the file's."""
    store = state.store
    reclaimed = await store.reclaim_stale_reservations()
    if reclaimed:
        log.info("reservations_reclaimed count=%d", len(reclaimed))

    async def adopt(bundle: Bundle, raw: str, source: str) -> None:
        state.set_bundle(bundle, source)
        await store.save_bundle(raw, etag=None)
        await store.apply_bundle_budgets(bundle.budgets)

    stored = await store.load_bundle()
    if stored is not None:
        try:
            state.set_bundle(parse_bundle(stored.body), "last_good", stored.fetched_at)
        except BundleError as exc:
            log.error("stored_bundle_unreadable error=%s", exc)
    path = state.settings.bundle_path
    if path is None:
        return None
    source = BundleFile(path, lambda bundle, raw: adopt(bundle, raw, f"file:{path}"))
    await source.load()
    return source


class Lifecycle:
    """Marks start-up done once the listener is up; drains on SIGTERM."""

    def __init__(self, state: GatewayState, master: Master):
        self.state = state
        self.master = master
        self._draining: asyncio.Task[None] | None = None

    def running(self) -> None:
        # Start-up imports leave ~100k long-lived objects; without this every full
        # collection walks them all (a 50-70 ms pause every ~900 requests).
        gc.freeze()
        self.state.started = True
        log.info("gateway_started listen=%s version=%s", self.state.settings.listen, VERSION)

    def begin_drain(self) -> None:
        if self._draining is not None:  # a second signal: stop now
            self.master.shutdown()
            return
        self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        settings = self.state.settings
        self.state.draining = True
        log.info('gateway_draining pre_drain_wait="%ss"', settings.drain_pre_wait_s)
        await asyncio.sleep(settings.drain_pre_wait_s)
        log.info('gateway_shutting_down timeout="%ss" inflight=%d', settings.drain_timeout_s, self.state.inflight)
        deadline = time.monotonic() + settings.drain_timeout_s
        while self.state.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.state.inflight > 0:
            log.warning("gateway_drain_timeout abandoned=%d", self.state.inflight)
        self.master.shutdown()


def make_options(settings: Settings) -> options.Options:
    # The reverse target is a placeholder: Route rewrites every forwarded flow.
    modes = [f"reverse:http://127.0.0.1:9@{settings.listen_port}"]
    if settings.intercept_enabled:  # the HTTPS_PROXY listener (addons/intercept.py)
        modes.append(f"regular@{settings.intercept_listen}")
    return options.Options(
        mode=modes,
        listen_host=settings.listen_host,
        # Holds the per-machine CA (agent/trustca.py) that intercept mode signs with.
        confdir=str(settings.data_dir / "mitmproxy"),
    )


def upstream_ca_options(settings: Settings) -> dict[str, str]:
    """mitmproxy verifies upstreams against one file only: the system's CAs plus the configured extra."""
    if settings.upstream_ca_file is None:
        return {}
    combined = settings.data_dir / "mitmproxy" / "upstream-ca.pem"
    combined.write_bytes(system_bundle().read_bytes().rstrip(b"\n") + b"\n" + settings.upstream_ca_file.read_bytes())
    return {"ssl_verify_upstream_trusted_ca": str(combined)}


async def serve(settings: Settings) -> None:
    secrets.ensure_private_dir(settings.data_dir)
    _http1.make_error_response = _protocol_error_response  # see its docstring
    url = control_plane_url(settings)
    store = Store.open(settings.data_dir / "governor.db", spend_outbox=url is not None)
    try:
        await _serve(settings, store, url)
    finally:
        store.close()


async def _serve(settings: Settings, store: Store, url: str | None) -> None:
    state = build_state(settings, store)
    bundle_file = await restore_governance(state)
    ensure_ca(settings.data_dir)  # before mitmproxy would make its own
    forwarder = Forwarder(settings, state.routing.breaker)
    await forwarder.start()
    master = Master(make_options(settings))
    master.addons.add(
        core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(), errorcheck.ErrorCheck()
    )
    master.options.update(
        # Answer locally (health, refusals) without ever dialling the upstream.
        connection_strategy="lazy",
        body_size_limit=str(settings.body_limit_bytes),
        # Keep the client's Host so Guard can refuse DNS-rebinding names; Route
        # sets the upstream's when it rewrites the destination.
        keep_host_header=True,
        **upstream_ca_options(settings),
    )
    lifecycle = Lifecycle(state, master)
    hosts = [*INTERCEPT_HOSTS, *settings.intercept_hosts]
    proxy_pac = pac(settings.intercept_listen, hosts).encode()
    master.addons.add(
        lifecycle,
        Intercept(state, hosts, proxy_pac, settings.resolve),
        Guard(state),
        Auth(state),
        Parse(state),
        Policy(state),
        Budget(state),
        Route(state, forwarder, initial_credentials(state, azure_key(settings))),
        Meter(state),
        Record(state),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, lifecycle.begin_drain)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread: no signal handlers
            pass
    stop = asyncio.Event()
    background = [loop.create_task(maintenance.run(state, stop))]
    if bundle_file:
        background.append(loop.create_task(bundle_file.run(stop)))
    if url:
        background.append(loop.create_task(OrgConnection(state, url).run(stop)))
    try:
        await master.run()
    finally:
        stop.set()  # the exporter gets its grace period to finish a batch in flight
        await asyncio.wait(background, timeout=6)
        for task in background:
            task.cancel()
        await forwarder.close()
    log.info("gateway_stopped")
