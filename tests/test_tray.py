"""Tray menu, state and notification logic on pystray's dummy backend, against a real agent."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

os.environ.setdefault("PYSTRAY_BACKEND", "dummy")

from agent import client as api  # noqa: E402
from agent.statusview import Health  # noqa: E402
from tests.harness import LOCAL_KEY, AgentProcess, free_port  # noqa: E402
from tray import app as tray  # noqa: E402
from tray.icons import contact_sheet, ring_icon  # noqa: E402
from tray.notify import Notifier  # noqa: E402

NOW = 1_790_000_000.0


def budget(pct: float, **extra: object) -> dict:
    limit = 200.0
    return {"id": "team-month", "scope": "team", "window": "month", "limit_usd": limit, "spent_usd": limit * pct / 100,
            "reserved_usd": 0, "remaining_usd": limit * (1 - pct / 100), "pct": pct, "resets_at": NOW + 86400 * 10,
            "on_breach": "block", **extra}


def status(**extra: object) -> dict:
    return {"version": "t", "uptime_s": 5, "listen": "127.0.0.1:1", "state": "running", "inflight": 0,
            "providers": {}, **extra}


def texts(entries: list[tray.Entry]) -> list[str]:
    return [e.text for e in entries if not e.separator]


def test_menu_when_agent_is_down_offers_start() -> None:
    entries = tray.menu_entries(None)
    assert texts(entries) == ["Governor: agent not running", "Start agent", "Open logs", "Quit"]
    assert entries[0].enabled is False


def test_menu_lists_budgets_today_refusal_and_actions() -> None:
    current = status(
        governed=True,
        budgets=[budget(21.05)],
        today={"requests": 12, "cost_usd": 1.5, "tokens": 4000, "by_model": {}, "by_client": {}},
        last_refusal={"at": NOW - 60, "code": "policy_denied", "message": "tool Bash is not allowed",
                      "client": "claude-code", "model": "claude-opus-4-8"},
        control_plane={"url": "https://cp", "connected": True, "dashboard_url": "https://cp/dash"},
        managed={"allow_sync": False},
    )
    entries = tray.menu_entries(current, now=NOW)
    lines = texts(entries)
    assert lines[0] == "Governor: governed"
    assert lines[1].startswith("team budget team-month: $42.10 of $200.00 · month · resets ")
    assert "Today: 12 calls · $1.50" in lines
    assert any(line.startswith("Last refused") and "tool Bash is not allowed" in line for line in lines)
    by_text = {e.text: e for e in entries}
    assert by_text["Open dashboard"].action == "open_dashboard"
    assert by_text["Sync now"].enabled is False  # managed settings forbid it
    assert [c.argument for c in by_text["Copy setup for"].children] == list(tray.TOOLS)


def test_health_colours_follow_budgets_and_bundle() -> None:
    from agent.statusview import health

    assert health(None) is Health.NOT_RUNNING
    assert health(status(budgets=[budget(10)])) is Health.GOVERNED
    assert health(status(budgets=[budget(85)])) is Health.WARNING
    assert health(status(bundle={"stale": True, "revision": "r1", "source": "file", "age_s": 9999})) is Health.WARNING
    assert health(status(budgets=[budget(100)])) is Health.BLOCKED
    assert health(status(budgets=[budget(100, on_breach="warn")])) is Health.WARNING


def test_notifications_fire_once_per_event_per_cooldown() -> None:
    clock = [NOW]
    notifier = Notifier(cooldown_s=600, clock=lambda: clock[0])
    assert notifier.events(None, status(budgets=[budget(90)])) == []  # start-up is not news
    assert notifier.events(status(budgets=[budget(70)]), status(budgets=[budget(81)]))[0][0] == "Budget at 81%"
    # back under and over again within the cooldown: silent
    assert notifier.events(status(budgets=[budget(70)]), status(budgets=[budget(82)])) == []
    clock[0] += 601
    assert len(notifier.events(status(budgets=[budget(70)]), status(budgets=[budget(82)]))) == 1
    used_up = notifier.events(status(budgets=[budget(95)]), status(budgets=[budget(100)]))
    assert used_up[0][0] == "Budget used up"
    refusal = {"at": NOW, "code": "budget_exceeded", "message": "team budget used up"}
    assert notifier.events(status(), status(last_refusal=refusal))[0][0] == "Call refused"
    assert notifier.events(status(), status(last_refusal={**refusal, "at": NOW + 1})) == []  # same code, cooldown
    assert notifier.events(status(), status(state="revoked"))[0][0] == "Key revoked"
    stale = status(bundle={"stale": True})
    assert notifier.events(status(bundle={"stale": False}), stale)[0][0] == "Control plane unreachable"
    assert notifier.events(stale, stale) == []


def test_icons_are_crisp_at_every_size() -> None:
    for size in (16, 22, 24, 32, 48, 64):
        image = ring_icon(Health.GOVERNED, 0.5, size)
        assert image.size == (size, size) and image.mode == "RGBA"
        alpha = image.getchannel("A")
        assert alpha.getpixel((0, 0)) == 0  # transparent corners
        assert alpha.getpixel((size // 2, size // 2)) >= 240  # solid centre dot
    assert ring_icon(Health.BLOCKED, 1, 32).tobytes() != ring_icon(Health.GOVERNED, 1, 32).tobytes()
    assert contact_sheet().size[0] > contact_sheet().size[1]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):
    with AgentProcess(tmp_path_factory.mktemp("tray-agent")) as running:
        yield running


_apps: list[tray.TrayApp] = []


@pytest.fixture(autouse=True)
def close_apps():
    yield
    while _apps:
        _apps.pop().close()


def make_app(base_url: str, data_dir: Path, key: str = LOCAL_KEY) -> tuple[tray.TrayApp, list[str]]:
    copied: list[str] = []
    app = tray.TrayApp(api.LocalClient(base_url, key), data_dir, clipboard=lambda text: copied.append(text) or True)
    _apps.append(app)
    return app, copied


def pystray_item(app: tray.TrayApp, text: str):
    for item in app.icon.menu.items:
        if item.text == text:
            return item
    raise AssertionError(f"{text!r} not in {[i.text for i in app.icon.menu.items]}")


def test_tray_reads_a_running_agent_and_copies_setup(agent: AgentProcess, tmp_path: Path) -> None:
    app, copied = make_app(agent.base_url, tmp_path)
    assert app.poll_once() == tray.POLL_S
    assert app.status is not None and app.status["version"]
    assert app.icon.title.startswith("Governor: governed")
    submenu = pystray_item(app, "Copy setup for").submenu
    claude = next(item for item in submenu.items if item.text == "claude")
    claude(app.icon)  # what a click does
    app.worker.submit(lambda: None).result(5)
    assert "governor claude" in copied[0] and f"ANTHROPIC_BASE_URL=\"{agent.base_url}\"" in copied[0]
    assert LOCAL_KEY not in copied[0]  # setup text names `governor key`, never the key


def test_tray_goes_read_only_on_a_refused_key(agent: AgentProcess, tmp_path: Path) -> None:
    app, _ = make_app(agent.base_url, tmp_path, key="wrong")
    app.poll_once()
    assert app.read_only
    texts_now = [item.text for item in app.icon.menu.items]
    assert any("read-only" in text for text in texts_now) or app.status is None


def test_tray_when_agent_is_down_then_start_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    down = AgentProcess(tmp_path / "later")
    down.data_dir.mkdir(parents=True)
    app, _ = make_app(down.base_url, down.data_dir)
    assert app.poll_once() < 0
    assert app.icon.title == "Governor: agent not running"
    start = pystray_item(app, "Start agent")
    for name, value in down.env.items():
        if name.startswith("GOVERNOR_"):
            monkeypatch.setenv(name, value)
    start(app.icon)
    app.worker.submit(lambda: None).result(10)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and app.poll_once() < 0:
            time.sleep(0.1)
        assert app.status is not None
        assert [item.text for item in app.icon.menu.items][0].startswith("Governor: governed")
        sync = pystray_item(app, "Sync now")
        sync(app.icon)
        app.worker.submit(lambda: None).result(10)
        assert app.notifications[-1][1] in ("this agent has nothing to sync (standalone bundle)",) or app.notifications
    finally:
        assert app.started_agent is not None
        assert int((down.data_dir / "agent.pid").read_text()) == app.started_agent.pid
        app.started_agent.send_signal(signal.SIGTERM)
        app.started_agent.wait(30)


def test_quit_stops_polling(agent: AgentProcess, tmp_path: Path) -> None:
    app, _ = make_app(agent.base_url, tmp_path)
    app.poll_once()
    stops: list[bool] = []
    app.icon.stop = lambda: stops.append(True)  # the dummy backend has no loop to stop
    pystray_item(app, "Quit")(app.icon)
    app.worker.submit(lambda: None).result(5)
    assert stops == [True] and app._stop.is_set()


def test_free_port_means_not_running_for_the_client() -> None:
    with api.LocalClient(f"http://127.0.0.1:{free_port()}", "k") as local:
        with pytest.raises(api.AgentNotRunning, match="not running"):
            local.status()


def test_open_spend_page_and_open_logs(agent: AgentProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from agent import logs

    opened: list[str] = []
    monkeypatch.setattr(tray.webbrowser, "open", lambda url: opened.append(url) or True)
    monkeypatch.setattr(tray, "open_path", lambda path: opened.append(str(path)))
    monkeypatch.setenv("GOVERNOR_LOG_DIR", str(tmp_path / "logs"))
    app, _ = make_app(agent.base_url, tmp_path)
    app.poll_once()
    app.click("open_spend_page").result(10)
    assert opened[0].startswith(agent.base_url + "/_governor/?t=")  # a one-time link, not the key
    assert LOCAL_KEY not in opened[0] and httpx.get(opened[0]).status_code == 303
    app.click("open_logs").result(10)
    assert opened[1] == str(logs.log_path()) == str(tmp_path / "logs" / logs.LOG_FILE)
