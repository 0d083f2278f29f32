"""Tray icons drawn at run time: a ring that fills clockwise with the month's
budget use, in the state's colour, with a centre dot while governed.

Drawn 8× larger and downsampled (LANCZOS), so the 16 px icon is as clean as
the 64 px one. Colours are mid-luminance with a thin darker outline so the
ring reads on light and dark panels alike.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

from agent.statusview import Health

SUPERSAMPLE = 8
COLOURS: dict[Health, tuple[int, int, int]] = {
    Health.GOVERNED: (46, 164, 79),
    Health.WARNING: (224, 160, 0),
    Health.BLOCKED: (225, 60, 55),
    Health.NOT_RUNNING: (140, 149, 159),
}
TRACK = (140, 149, 159, 110)  # the unfilled part of the ring
OUTLINE = (20, 24, 28, 150)
FRACTION_STEPS = 24  # the ring moves in 15° steps: enough resolution, a small cache


def _quantise(fraction: float) -> int:
    return round(max(0.0, min(1.0, fraction)) * FRACTION_STEPS)


@lru_cache(maxsize=256)
def _draw(health: Health, steps: int, size: int) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    colour = COLOURS[health]
    margin = big * 0.06
    width = round(big * 0.2)
    box = (margin, margin, big - margin, big - margin)
    outline_w = max(SUPERSAMPLE, round(big * 0.025))
    # Outline first (slightly wider ring), so light panels see an edge.
    draw.ellipse(box, outline=OUTLINE, width=width + outline_w)
    draw.ellipse(
        (box[0] + outline_w / 2, box[1] + outline_w / 2, box[2] - outline_w / 2, box[3] - outline_w / 2),
        outline=TRACK,
        width=width,
    )
    inner = (box[0] + outline_w / 2, box[1] + outline_w / 2, box[2] - outline_w / 2, box[3] - outline_w / 2)
    if health is Health.NOT_RUNNING:
        pass  # an empty grey ring: nothing is measured
    elif steps >= FRACTION_STEPS or health is Health.BLOCKED:
        draw.ellipse(inner, outline=colour + (255,), width=width)
    elif steps > 0:
        draw.arc(inner, start=-90, end=-90 + 360 * steps / FRACTION_STEPS, fill=colour + (255,), width=width)
    if health is not Health.NOT_RUNNING:
        radius = big * 0.17
        centre = big / 2
        draw.ellipse(
            (centre - radius, centre - radius, centre + radius, centre + radius),
            fill=colour + (255,),
            outline=OUTLINE,
            width=outline_w,
        )
    return image.resize((size, size), Image.Resampling.LANCZOS)


def ring_icon(health: Health, fraction: float = 0.0, size: int = 64) -> Image.Image:
    """The icon for a state and a budget fraction (0–1); a fresh copy the caller may keep."""
    return _draw(health, _quantise(fraction), size).copy()


def contact_sheet(sizes: tuple[int, ...] = (16, 22, 24, 32, 48, 64)) -> Image.Image:
    """Every state at every size on a light and a dark panel (docs/tray-icons.png)."""
    cases = [
        (Health.GOVERNED, 0.35),
        (Health.WARNING, 0.85),
        (Health.BLOCKED, 1.0),
        (Health.NOT_RUNNING, 0.0),
    ]
    pad = 8
    cell = max(sizes) + pad
    width = pad + len(sizes) * cell
    height = pad + len(cases) * cell
    sheet = Image.new("RGBA", (width * 2, height), (0, 0, 0, 0))
    for panel_index, panel in enumerate(((246, 248, 250, 255), (30, 33, 38, 255))):
        x0 = panel_index * width
        sheet.paste(Image.new("RGBA", (width, height), panel), (x0, 0))
        for row, (health, fraction) in enumerate(cases):
            for col, size in enumerate(sizes):
                icon = ring_icon(health, fraction, size)
                x = x0 + pad + col * cell + (max(sizes) - size) // 2
                y = pad + row * cell + (max(sizes) - size) // 2
                sheet.alpha_composite(icon, (x, y))
    return sheet
