"""`governor tray`: the tray icon, a thin client of the agent's local API.

It holds an API client and the last status, nothing else: it never opens the
store. A poller thread reads `/status` (every 5 s while the agent answers,
backing off to 60 s while it does not); every click is one API call, made on
a worker thread; every change to the icon or menu goes through `_ui()`, which
hands it to the toolkit's own thread (pystray's `run()` owns the main one).
On a refused key it goes read-only: it shows state but offers no action that
changes anything.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import client as api
from agent import statusview as view
from agent import wrappers
from tray.icons import ring_icon
from tray.notify import Notifier

log = logging.getLogger("governor.tray")

POLL_S = 5.0
BACKOFF_MAX_S = 60.0
ICON_SIZE = 64
TOOLS = ("claude", "codex", "gemini", "opencode", "aider", "cursor")


def setup_snippet(tool: str, base_url: str) -> str:
    """What "Copy setup for <tool>" puts on the clipboard: the one-word wrapper, plus
    the manual settings for people who start the tool themselves (no key in clear)."""
    key = "$(governor key)"
    gateway = wrappers.Gateway(base_url, key)
    if tool == "cursor":
        return wrappers.cursor_instructions(gateway)
    launch = wrappers.plan(tool, [], gateway, {})
    lines = [f"# simplest: governor {tool}", "# or, in this shell:"]
    lines += [f"unset {name}" for name in launch.clear_env]
    lines += [f'export {name}="{value}"' for name, value in launch.set_env.items() if "{run_dir}" not in value]
    if tool == "codex":
        lines.append("codex " + " ".join(f"'{arg}'" if arg != "-c" else arg for arg in wrappers.codex_overrides(gateway)))
    if tool == "gemini":
        lines.append('# and in ~/.gemini/settings.json: {"security": {"auth": {"selectedType": "gemini-api-key"}}}')
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Entry:
    """One menu line, toolkit-free so the menu logic is testable as data."""

    text: str
    action: str | None = None  # None: an information line
    enabled: bool = True
    argument: str | None = None
    children: tuple[Entry, ...] = ()
    separator: bool = False


SEPARATOR = Entry("", separator=True)


def menu_entries(status: Mapping[str, Any] | None, read_only: bool = False, now: float | None = None) -> list[Entry]:
    """The menu for a status (None: agent not running). Pure."""
    if status is None:
        return [
            Entry(view.headline(None), enabled=False),
            Entry("Start agent", "start_agent"),
            SEPARATOR,
            Entry("Open logs", "open_logs"),
            Entry("Quit", "quit"),
        ]
    managed = status.get("managed") or {}
    entries = [Entry(view.headline(status), enabled=False)]
    if read_only:
        entries.append(Entry("Local key refused: read-only (run `governor doctor`)", enabled=False))
    for budget in view.budgets(status):
        entries.append(Entry(f"{view.budget_name(budget)}: {view.budget_line(budget, now)}", enabled=False))
    entries.append(Entry(view.today_line(status), enabled=False))
    refusal = view.refusal_line(status, now)
    if refusal:
        entries.append(Entry(refusal, enabled=False))
    bundle = view.bundle_line(status)
    if bundle:
        entries.append(Entry(bundle, enabled=False))
    entries.append(SEPARATOR)
    entries.append(
        Entry("Copy setup for", children=tuple(Entry(tool, "copy_setup", argument=tool) for tool in TOOLS))
    )
    entries.append(Entry("Open spend page", "open_spend_page", enabled=not read_only))
    plane = status.get("control_plane") or {}
    if plane.get("dashboard_url"):
        entries.append(Entry("Open dashboard", "open_dashboard"))
    sync_allowed = managed.get("allow_sync", True) is not False
    entries.append(Entry("Sync now", "sync", enabled=sync_allowed and not read_only))
    entries.append(Entry("Open logs", "open_logs"))
    entries.append(SEPARATOR)
    entries.append(Entry("Quit", "quit", enabled=managed.get("allow_quit", True) is not False))
    return entries


def open_path(path: Path) -> None:
    if sys.platform == "darwin":
        subprocess.Popen(["open", str(path)])
    elif os.name == "nt":
        os.startfile(str(path))  # type: ignore[attr-defined]
    else:
        webbrowser.open(path.as_uri())


class TrayApp:
    def __init__(
        self,
        local: api.LocalClient,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
        clipboard: Callable[[str], bool] | None = None,
    ):
        import pystray  # deferred: picking a backend needs a display

        self.pystray = pystray
        self.local = local
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.status: dict[str, Any] | None = None
        self.read_only = False
        self.last_error: str | None = None
        self.notifier = Notifier(clock=clock)
        self.notifications: list[tuple[str, str]] = []  # shown so far (tests and logs read it)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tray-click")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None
        self.started_agent: subprocess.Popen[bytes] | None = None
        if clipboard is None:
            from agent.toolsetup import copy_to_clipboard

            clipboard = copy_to_clipboard
        self.clipboard = clipboard
        self.icon = pystray.Icon(
            "governor",
            icon=ring_icon(view.Health.NOT_RUNNING, 0, ICON_SIZE),
            title=view.headline(None),
            menu=pystray.Menu(self._menu_items),
        )

    # -- UI: the one way in --------------------------------------------------

    def _ui(self, change: Callable[[], None]) -> None:
        """Run `change` on the toolkit's thread (GLib's loop for gtk/appindicator)."""
        module = type(self.icon).__module__
        if module.endswith(("_gtk", "_appindicator")):
            from gi.repository import GLib

            GLib.idle_add(lambda: change() and False)
        else:
            change()

    def notify(self, title: str, message: str) -> None:
        self.notifications.append((title, message))
        log.info("notify title=%r message=%r", title, message)

        def show() -> None:
            try:
                self.icon.notify(message, title)
            except NotImplementedError:
                pass  # a backend without notifications (dummy, xorg): the log line above stays

        if self.icon.HAS_NOTIFICATION:
            self._ui(show)

    def _render(self) -> None:
        state = view.health(self.status)
        self.icon.icon = ring_icon(state, view.ring_fraction(self.status), ICON_SIZE)
        self.icon.title = view.headline(self.status)
        try:
            self.icon.update_menu()
        except NotImplementedError:
            pass  # the dummy backend has no native menu; `icon.menu` is read on demand

    def _menu_items(self) -> list[Any]:
        return [self._to_pystray(entry) for entry in menu_entries(self.status, self.read_only, self.clock())]

    def _to_pystray(self, entry: Entry) -> Any:
        pystray = self.pystray
        if entry.separator:
            return pystray.Menu.SEPARATOR
        if entry.children:
            return pystray.MenuItem(entry.text, pystray.Menu(*(self._to_pystray(c) for c in entry.children)))
        if entry.action is None:
            return pystray.MenuItem(entry.text, None, enabled=False)
        return pystray.MenuItem(entry.text, self._on_click(entry), enabled=entry.enabled)

    def _on_click(self, entry: Entry) -> Callable[[Any, Any], None]:
        # pystray inspects the arity: exactly (icon, item), no defaulted extras.
        def on_click(icon: Any, item: Any) -> None:
            self.click(entry.action, entry.argument)

        return on_click

    # -- polling ---------------------------------------------------------------

    def poll_once(self) -> float:
        """One status read; returns how long to wait before the next."""
        previous = self.status
        try:
            self.status = self.local.status()
            self.read_only = False
            self.last_error = None
            delay = POLL_S
        except api.Unauthorized as exc:
            self.read_only, self.last_error = True, str(exc)
            delay = BACKOFF_MAX_S
        except api.ClientError as exc:
            self.status, self.last_error = None, str(exc)
            delay = -1.0  # caller backs off
        for title, message in self.notifier.events(previous, self.status):
            self.notify(title, message)
        self._ui(self._render)
        return delay

    def _poll_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            delay = self.poll_once()
            if delay < 0:
                delay, backoff = backoff, min(backoff * 2, BACKOFF_MAX_S)
            else:
                backoff = 1.0
            self._wake.wait(delay)
            self._wake.clear()

    def start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="tray-poll", daemon=True)
        self._poller.start()

    # -- clicks: one API call each, off the UI thread -------------------------------

    def click(self, action: str | None, argument: str | None = None) -> Future[None]:
        handler = getattr(self, f"do_{action}")
        return self.worker.submit(self._guarded, handler, argument)

    def _guarded(self, handler: Callable[[str | None], None], argument: str | None) -> None:
        try:
            handler(argument)
        except api.ClientError as exc:
            self.notify("Governor", str(exc))

    def do_start_agent(self, _: str | None) -> None:
        from agent import launcher

        # Kept so the child is reaped by us if it exits while the tray runs.
        self.started_agent = launcher.start_agent_detached(self.data_dir)
        self._wake.set()

    def do_copy_setup(self, tool: str | None) -> None:
        text = setup_snippet(tool or "claude", self.local.base_url)
        if tool == "cursor":
            text = self.local.key or ""  # Cursor wants the key itself in its settings field
        if not self.clipboard(text):
            self.notify("Governor", "No clipboard tool found (install xclip or wl-clipboard)")

    def do_open_spend_page(self, _: str | None) -> None:
        from agent import spendpage

        spendpage.open_in_browser(self.local)

    def do_open_dashboard(self, _: str | None) -> None:
        url = ((self.status or {}).get("control_plane") or {}).get("dashboard_url")
        if url:
            webbrowser.open(url)

    def do_sync(self, _: str | None) -> None:
        try:
            self.local.sync()
        except api.ApiError as exc:
            if exc.status in (404, 405):
                raise api.ClientError("this agent has nothing to sync (standalone bundle)") from None
            raise
        self._wake.set()

    def do_open_logs(self, _: str | None) -> None:
        from agent import logs

        open_path(logs.log_path())  # the file `governor run` writes (GOVERNOR_LOG_DIR, else the user log dir)

    def do_quit(self, _: str | None) -> None:
        self._stop.set()
        self._wake.set()
        self._ui(self.icon.stop)

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.worker.shutdown(wait=True)
        self.local.close()

    def run(self) -> None:
        def started(icon: Any) -> None:
            icon.visible = True
            self.start_polling()

        try:
            self.icon.run(setup=started)
        except Exception as exc:  # noqa: BLE001 - pystray's gtk stop raises without a notification server
            if not self._stop.is_set():
                raise
            log.debug("tray_stop_error error=%s", type(exc).__name__)
        finally:
            self.close()


def main(settings: Any) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    try:
        app = TrayApp(api.from_settings(settings), Path(settings.data_dir))
    except Exception as exc:  # noqa: BLE001 - pystray raises toolkit-specific errors without a display
        print(
            f"governor: no system tray available ({type(exc).__name__}: {exc}); "
            "the agent runs without it — use `governor status`",
            file=sys.stderr,
        )
        return 1
    app.run()
    return 0
