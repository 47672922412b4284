"""A bar chart of benchmark results drawn with Pillow only (no matplotlib).

One panel per task; one horizontal bar per system (median time, with the
min marked as a thin tick), value labels at the bar ends, and unavailable
systems listed as "not available".
"""

from __future__ import annotations

import os

PALETTE = [
    (66, 133, 244),
    (219, 68, 55),
    (244, 160, 0),
    (15, 157, 88),
    (171, 71, 188),
    (0, 172, 193),
    (255, 112, 67),
    (158, 157, 36),
]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1.0 else f"{seconds * 1e3:.1f} ms"


def _text_w(draw, text, font) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0]


def draw_chart(report: dict, path: str, width: int = 1000) -> str:
    """Write a PNG of ``report['results']`` ({task: {system: summary}})."""
    from PIL import Image, ImageDraw

    results = report["results"]
    title = report.get("title", "benchmark")
    subtitle = report.get("subtitle", "")
    systems = []
    for task in results.values():
        for s in task:
            if s not in systems:
                systems.append(s)
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(systems)}

    f_title, f_body, f_small = _font(22), _font(15), _font(12)
    bar_h, gap, pad = 26, 10, 24
    label_w = 200
    heights = []
    for task, rows in results.items():
        heights.append(40 + len(rows) * (bar_h + gap) + 16)
    height = pad * 2 + 60 + sum(heights) + 20
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, pad), title, fill="black", font=f_title)
    if subtitle:
        d.text((pad, pad + 30), subtitle, fill=(90, 90, 90), font=f_small)
    y = pad + 60
    x0 = pad + label_w
    max_bar = width - x0 - pad - 110
    for task, rows in results.items():
        label = report.get("task_labels", {}).get(task, task)
        d.text((pad, y), label, fill="black", font=f_body)
        d.line((pad, y + 24, width - pad, y + 24), fill=(200, 200, 200))
        y += 36
        ok = [r["median_s"] for r in rows.values() if r.get("status") == "ok"]
        vmax = max(ok) if ok else 1.0
        for system, r in rows.items():
            d.text((pad + 8, y + 5), system, fill="black", font=f_body)
            if r.get("status") == "ok":
                w = max(2, int(max_bar * r["median_s"] / vmax))
                d.rectangle((x0, y, x0 + w, y + bar_h), fill=colour[system])
                wmin = int(max_bar * r["min_s"] / vmax)
                d.line((x0 + wmin, y - 2, x0 + wmin, y + bar_h + 2), fill="black", width=2)
                txt = _fmt(r["median_s"])
                d.text((x0 + w + 8, y + 5), txt, fill="black", font=f_body)
            else:
                why = "not available" if r.get("status") == "unavailable" else "failed"
                d.text((x0 + 4, y + 5), why, fill=(150, 150, 150), font=f_body)
            y += bar_h + gap
        y += 16
    d.text(
        (pad, height - pad - 6),
        "bar = median over all timed runs, tick = min; shorter is faster",
        fill=(90, 90, 90),
        font=f_small,
    )
    tmp = f"{path}.tmp-{os.getpid()}.png"
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
