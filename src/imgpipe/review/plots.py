"""Render DVC's own plot definitions to PNG files, with vl-convert (Vega-Lite, no browser)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

SCALE = 1.5  # pixels per Vega-Lite unit: sharp on high-density screens, still small files


@dataclass(frozen=True)
class Rendered:
    title: str
    file: str  # the PNG's name in the folder; empty when it could not be rendered
    error: str = ""


def render_plots(plots: dict, folder: Path, order: list[str]) -> list[Rendered]:
    """Write one PNG per plot of `dvc plots diff --json`'s `data` into `folder`, each showing
    both revisions, in the order of `order` (revision names as DVC labels them)."""
    import vl_convert  # imported here: the review's only use of it, and it starts a JS runtime

    rendered = []
    for title, renderers in plots.items():
        for i, renderer in enumerate(r for r in renderers if r.get("type") == "vega"):
            name = slug(title) + (f"-{i + 1}" if i else "") + ".png"
            try:
                png = vl_convert.vegalite_to_png(for_print(renderer["content"], order), scale=SCALE)
            except ValueError as err:  # a template vl-convert cannot render must not sink the review
                rendered.append(Rendered(title, "", " ".join(str(err).split()[:30])))
                continue
            (folder / name).write_bytes(png)
            rendered.append(Rendered(title, name))
    return rendered


def for_print(spec: dict, order: list[str]) -> dict:
    """The spec for a still image: revisions in `order` (base first), interactive toggles on."""
    spec = copy.deepcopy(spec)
    rank = {rev: i for i, rev in enumerate(order)}
    values = spec.get("data", {}).get("values")
    if isinstance(values, list):
        values.sort(key=lambda row: rank.get(row.get("rev"), len(rank)))  # stable: keeps rows in order
    for param in spec.get("params", []):
        bind = param.get("bind")
        if isinstance(bind, dict) and bind.get("input") == "checkbox":  # nobody can tick a box in a PNG
            param["value"] = True
    return spec


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "plot"
