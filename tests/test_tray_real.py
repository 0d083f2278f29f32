"""The real tray: GTK backend under Xvfb, docked in `trayer`, notifications to
`dunst`, clicked with `xdotool`; screenshots compared in shape, not pixels.

Needs (Debian): xvfb trayer dunst xdotool imagemagick dbus (dbus-run-session)
gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1 libgirepository1.0-dev libcairo2-dev,
and PyGObject in the venv. Skips, naming what is missing, otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import AgentProcess

REPO = Path(__file__).resolve().parent.parent
BINARIES = ("Xvfb", "trayer", "dunst", "xdotool", "import", "dbus-run-session")
missing = [b for b in BINARIES if shutil.which(b) is None]
if importlib.util.find_spec("gi") is None:
    missing.append("PyGObject (python module gi)")
pytestmark = pytest.mark.skipif(bool(missing), reason=f"real tray test needs: {', '.join(missing)}")

PANEL_HEIGHT = 40
GREY = (140, 149, 159)


def screenshot(display: str, path: Path) -> Image.Image:
    subprocess.run(["import", "-window", "root", str(path)], env={**os.environ, "DISPLAY": display}, check=True, timeout=20)
    return Image.open(path).convert("RGB")


def coloured_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Pixels in `box` with real colour (the ring's state colour), not panel grey/black/white."""
    region = image.crop(box)
    found = []
    for y in range(region.height):
        for x in range(region.width):
            r, g, b = region.getpixel((x, y))
            if max(r, g, b) - min(r, g, b) > 60:
                found.append((x + box[0], y + box[1]))
    return found


def changed_pixels(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> int:
    pa, pb = a.crop(box).tobytes(), b.crop(box).tobytes()
    return sum(1 for i in range(0, len(pa), 3) if pa[i : i + 3] != pb[i : i + 3])


@pytest.fixture
def display(tmp_path: Path):
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "640x560x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(10)


def test_tray_icon_menu_and_quit(display: str, tmp_path: Path) -> None:
    # Governed by the example bundle, so the menu shows what an engineer sees: budgets and spend.
    with AgentProcess(tmp_path / "agent", env={"GOVERNOR_BUNDLE": str(REPO / "docs" / "example-bundle.json")}) as agent:
        env = {**agent.env, "DISPLAY": display, "NO_AT_BRIDGE": "1", "PYSTRAY_BACKEND": "gtk"}
        session = (
            "dunst >/dev/null 2>&1 & "
            "trayer --edge top --align left --widthtype pixel --width 300 --height 40 --transparent false "
            "--SetDockType false --SetPartialStrut false >/dev/null 2>&1 & "
            f"sleep 0.5; exec {sys.executable} -m agent.cli tray"
        )
        log = open(tmp_path / "tray.log", "w")
        tray = subprocess.Popen(["dbus-run-session", "--", "bash", "-c", session], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            icon_pixels: list[tuple[int, int]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not icon_pixels:
                time.sleep(0.5)
                docked = screenshot(display, tmp_path / "docked.png")
                icon_pixels = coloured_pixels(docked, (0, 0, 300, PANEL_HEIGHT))
            assert icon_pixels, "no coloured tray icon appeared in trayer's panel"
            xs, ys = [p[0] for p in icon_pixels], [p[1] for p in icon_pixels]
            centre = (sum(xs) // len(xs), sum(ys) // len(ys))
            assert max(xs) - min(xs) < PANEL_HEIGHT and max(ys) - min(ys) < PANEL_HEIGHT  # one small round icon

            xdo = {**os.environ, "DISPLAY": display}
            subprocess.run(["xdotool", "mousemove", str(centre[0]), str(centre[1]), "click", "3"], env=xdo, check=True)
            time.sleep(1.5)
            menu = screenshot(display, tmp_path / "menu.png")
            below = (0, PANEL_HEIGHT, 640, 560)
            assert changed_pixels(docked, menu, below) > 5000, "right-click opened no menu"
            menu.crop((0, 0, 640, 340)).save(tmp_path / "tray.png")
            if os.environ.get("GOVERNOR_UPDATE_DOCS"):
                menu.crop((0, 0, 640, 340)).save(REPO / "docs" / "tray.png")

            # Quit is the menu's last item: Up from no selection lands on it.
            subprocess.run(["xdotool", "key", "Up", "Return"], env=xdo, check=True)
            assert tray.wait(20) == 0, (tmp_path / "tray.log").read_text()
        finally:
            if tray.poll() is None:
                tray.terminate()
                tray.wait(10)
            log.close()
