"""Rendering DVC's plot definitions to PNG with vl-convert."""

from __future__ import annotations

from pathlib import Path

from imgpipe.review.plots import for_print, render_plots

LINE = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"step": s, "loss": 1 / s, "rev": rev} for rev in ("workspace", "main") for s in (1, 2, 3)]},
    "mark": "line",
    "params": [{"name": "show", "value": False, "bind": {"input": "checkbox"}}, {"name": "grid", "select": "interval", "bind": "scales"}],
    "encoding": {"x": {"field": "step", "type": "quantitative"}, "y": {"field": "loss", "type": "quantitative"},
                 "color": {"field": "rev", "type": "nominal"}},
}


def test_plots_are_pngs_and_a_broken_one_is_reported(tmp_path: Path):
    plots = {
        "Training loss": [{"type": "vega", "revisions": ["workspace", "main"], "content": LINE}],
        "Broken": [{"type": "vega", "revisions": ["main"], "content": {"mark": "no-such-mark"}}],
        "A picture": [{"type": "image", "revisions": ["main"], "url": "x.png"}],
    }
    rendered = render_plots(plots, tmp_path, order=["main", "workspace"])
    assert [(r.title, r.file) for r in rendered] == [("Training loss", "training-loss.png"), ("Broken", "")]
    assert (tmp_path / "training-loss.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "Vega-Lite" in rendered[1].error and "\n" not in rendered[1].error


def test_for_print_puts_the_base_first_and_ticks_checkboxes():
    spec = for_print(LINE, order=["main", "workspace"])
    assert [row["rev"] for row in spec["data"]["values"]] == ["main"] * 3 + ["workspace"] * 3
    assert spec["params"][0]["value"] is True and "value" not in spec["params"][1]
    assert LINE["data"]["values"][0]["rev"] == "workspace"  # the input is left as it was
