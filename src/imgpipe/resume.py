"""Resume state for the train stage: read it back, and trim dvclive history logged after it."""

from __future__ import annotations

from pathlib import Path

import torch


def load_resume_state(resume_dir: Path, run_id: str) -> dict | None:
    """The saved state of an interrupted run with this fingerprint, or None."""
    path = Path(resume_dir) / "state.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a state file cut short by a crash is no use: start over
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != run_id:
        return None
    return state


def truncate_history(live_dir: Path, step: int) -> None:
    """Drop dvclive rows logged after `step` (the interrupted epoch), so none appear twice.

    Works on the text lines so the kept rows stay byte for byte as dvclive wrote them.
    """
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        header, *rows = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        column = header.rstrip("\r\n").split("\t").index("step")
        kept = [row for row in rows if int(row.rstrip("\r\n").split("\t")[column]) <= step]
        tsv.write_text("".join([header, *kept]), encoding="utf-8")
