"""The review of a pull request as one Markdown page: is the head better than the base, and by
more than noise? What params changed, every metric on both sides, the classes that moved, the
plots of both sides, and a warning when the head's committed results are stale."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from imgpipe.outcomes import FILE as OUTCOMES_FILE
from imgpipe.outcomes import Outcomes, loads
from imgpipe.outputs import staged_outputs
from imgpipe.review.plots import Rendered, render_plots
from imgpipe.review.revisions import (
    WORKSPACE,
    Revision,
    find_repo,
    metrics_diff,
    params_diff,
    plots_diff,
    read_text,
    resolve,
    stale_stages,
    uncommitted_results,
)
from imgpipe.review.stats import ALPHA, RESAMPLES, Alone, Paired, compare_paired, summarize_alone


@dataclass(frozen=True)
class Side:
    revision: Revision
    outcomes: Outcomes | None
    problem: str = ""  # why there are no outcomes to compare


@dataclass(frozen=True)
class Review:
    markdown: str
    stale: dict[str, list[str]]  # stage -> what changed, at the head
    plots: list[Rendered]


def review(start: Path, base: str, head: str = WORKSPACE, out: Path | None = None, resamples: int = RESAMPLES) -> Review:
    """Compare the committed results of `base` with those of `head` (default: the workspace).

    With `out`, the Markdown is written there and the plots of both sides as PNG files into
    `<out stem>_files/` beside it (the two land together); without, no plots are rendered.
    """
    repo = find_repo(start)
    sides = [load_side(repo, resolve(repo, rev, option)) for rev, option in ((base, "--base"), (head, "--head"))]
    revisions = [side.revision for side in sides]
    stale = stale_stages(repo, revisions[1])
    uncommitted = uncommitted_results(repo) if revisions[1].workspace else []
    text = [
        header(*revisions),
        warnings(stale, uncommitted),
        verdict(*sides, resamples),
        params_section(params_diff(repo, *revisions)),
        metrics_section(metrics_diff(repo, *revisions)),
    ]
    if out is None:
        markdown = "\n\n".join(p for p in [*text, plots_section([], None)] if p) + "\n"
        return Review(markdown, stale, [])
    folder = plots_folder(Path(out))
    with staged_outputs() as staged:
        plots = render_plots(plots_diff(repo, *revisions), staged.folder(folder), order=[r.name for r in revisions])
        markdown = "\n\n".join(p for p in [*text, plots_section(plots, folder.name)] if p) + "\n"
        staged.file(Path(out)).write_text(markdown)
    return Review(markdown, stale, plots)


def plots_folder(out: Path) -> Path:
    return out.with_name(f"{out.stem}_files")


def load_side(repo: Path, revision: Revision) -> Side:
    """The revision's per-image outcome record, found through its dvc.yaml."""
    path = outcomes_path(read_text(repo, revision, "dvc.yaml"))
    if path is None:
        return Side(revision, None, "its dvc.yaml has no outcomes.json output (a revision before `imgpipe review`)")
    text = read_text(repo, revision, path)
    if text is None:
        where = "in the workspace" if revision.workspace else "committed"
        return Side(revision, None, f"no {path} {where} (the pipeline has not run, or its results were not committed)")
    try:
        return Side(revision, loads(text))
    except ValueError as err:
        return Side(revision, None, f"{path}: {err}")


def outcomes_path(dvc_yaml: str | None) -> str | None:
    """The evaluate stage's outcome record, wherever dvc.yaml puts it."""
    try:
        stages = (yaml.safe_load(dvc_yaml or "") or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    for stage in stages.values():
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            path = next(iter(out)) if isinstance(out, dict) else out
            if Path(path).name == OUTCOMES_FILE:
                return path
    return None


def header(base: Revision, head: Revision) -> str:
    return f"## imgpipe review\n\n**Base** {base.describe()} · **Head** {head.describe()}"


def warnings(stale: dict[str, list[str]], uncommitted: list[str]) -> str:
    notes = []
    if stale:
        changes = "; ".join(f"{stage}: {', '.join(what)}" for stage, what in stale.items())
        notes.append(
            "> **Warning: the head's results are stale.** Its committed results do not match its params "
            f"and code (`dvc status`): {changes}. The numbers below are from an older run; rerun "
            "`dvc repro` and commit `dvc.lock` and `metrics/`."
        )
    if uncommitted:
        notes.append(
            "> **Warning: uncommitted results.** " + ", ".join(f"`{p}`" for p in uncommitted[:8])
            + (" ..." if len(uncommitted) > 8 else "") + " changed in the workspace; commit them with the pull request."
        )
    return "\n\n".join(notes)


def verdict(base: Side, head: Side, resamples: int) -> str:
    title = "### Is the head better?\n\n"
    missing = [f"- {name}: {side.problem}." for name, side in (("Base", base), ("Head", head)) if side.outcomes is None]
    if missing:
        return title + "**No per-image outcomes to compare.**\n\n" + "\n".join(missing)
    if base.outcomes.test_set != head.outcomes.test_set:
        return title + unpaired(base.outcomes, head.outcomes, resamples)
    return title + paired(compare_paired(base.outcomes, head.outcomes, resamples), base.outcomes, resamples)


def paired(result: Paired, outcomes: Outcomes, resamples: int) -> str:
    accuracy = "Exact-match accuracy" if outcomes.task == "multilabel" else "Accuracy"
    n = result.images
    if not result.changed_decisions:
        return (
            f"**No change in test outcomes**: both models predict the same {'label set' if outcomes.task == 'multilabel' else 'class'} "
            f"for each of the {n} test images, so every test metric is the same."
        )
    net = result.only_head - result.only_base
    verdict = "**significant**" if result.significant else "not significant"
    lines = [
        f"- **{accuracy}** {pct(result.accuracy[0])} → {pct(result.accuracy[1])}: "
        f"**{points(result.accuracy[1] - result.accuracy[0])} ({net:+d} image{'s' * (abs(net) != 1)})**; "
        f"95% interval {span(result.accuracy_change)}; {verdict}, {p_value(result.p_value)}",
        f"- **Macro F1** {pct(result.f1_macro[0])} → {pct(result.f1_macro[1])}: "
        f"{points(result.f1_macro[1] - result.f1_macro[0])}; 95% interval {span(result.f1_macro_change)}"
        + (" (beyond noise)" if result.f1_macro_change.excludes_zero() else " (within noise)"),
    ]
    about = (
        f"Both models scored the same {n} test images. Exact McNemar test on the images only one model "
        f"gets right ({result.only_base} only the base, {result.only_head} only the head; "
        f"{result.changed_decisions} images predicted differently); significant means p < {ALPHA:g}. "
        f"Intervals: paired bootstrap over the test images, {resamples} resamples."
    )
    return "\n".join(lines) + "\n\n" + about + "\n\n" + classes_section(result)


def classes_section(result: Paired) -> str:
    moved = [c for c in result.classes if c.change.excludes_zero()]
    title = f"#### Classes whose F1 moved beyond noise ({len(moved)} of {len(result.classes)})\n\n"
    if not moved:
        return title + "None: every class's 95% interval for the change in F1 includes zero."
    rows = [[c.name, num(c.base), num(c.head), signed(c.head - c.base), f"{c.change.low:+.3f} to {c.change.high:+.3f}"]
            for c in sorted(moved, key=lambda c: c.head - c.base)]
    note = "\n\nPer-class paired bootstrap intervals (95%), not corrected for the number of classes compared."
    return title + table(["class", "base F1", "head F1", "change", "95% interval"], rows) + note


def unpaired(base: Outcomes, head: Outcomes, resamples: int) -> str:
    sides = [(name, summarize_alone(o, resamples)) for name, o in (("base", base), ("head", head))]
    rows = [[name, str(s.images), f"{pct(s.accuracy)} ({pct(s.accuracy_interval.low)} to {pct(s.accuracy_interval.high)})",
             f"{pct(s.f1_macro)} ({pct(s.f1_macro_interval.low)} to {pct(s.f1_macro_interval.high)})"] for name, s in sides]
    overlap = _overlap(sides[0][1], sides[1][1])
    return (
        f"**The test sets differ** (base {base.test_set[:12]}, {len(base)} images; head {head.test_set[:12]}, "
        f"{len(head)} images): the data or the split changed, so the two models cannot be paired image by image "
        "and no paired test applies. Each side on its own test set, with its own 95% bootstrap interval "
        f"({resamples} resamples):\n\n"
        + table(["side", "test images", "accuracy", "macro F1"], rows)
        + f"\n\nThe accuracy intervals {overlap}."
    )


def _overlap(a: Alone, b: Alone) -> str:
    apart = a.accuracy_interval.high < b.accuracy_interval.low or b.accuracy_interval.high < a.accuracy_interval.low
    return "do not overlap" if apart else "overlap: on these test sets the difference is within noise"


def params_section(changed: dict[str, tuple]) -> str:
    if not changed:
        return "### Params changed\n\nNone."
    rows = [[f"`{key}`", param(old), param(new)] for key, (old, new) in sorted(changed.items())]
    return "### Params changed\n\n" + table(["param", "base", "head"], rows)


def metrics_section(metrics: dict[str, dict[str, tuple]]) -> str:
    """Changed metrics in a table, unchanged ones folded away below it."""
    if not metrics:
        return "### Metrics\n\nNo metrics on either side."
    changed, same = [], []
    for path in sorted(metrics, key=_stage_order):
        for key, (old, new) in sorted(metrics[path].items()):
            row = [f"`{path}`", key, value(old), value(new), change(old, new)]
            (same if old == new else changed).append(row)
    header = ["file", "metric", "base", "head", "change"]
    text = "### Metrics\n\n" + (table(header, changed) if changed else "No metric changed.")
    if same:
        text += (f"\n\n<details><summary>{len(same)} unchanged metric{'s' * (len(same) != 1)}</summary>\n\n"
                 + table(header[:4], [row[:4] for row in same]) + "\n\n</details>")
    return text


def change(old, new) -> str:
    if not (_number(old) and _number(new)):
        return "" if old == new else "changed"
    return f"{new - old:+d}" if isinstance(old, int) and isinstance(new, int) else signed(new - old)


def _stage_order(path: str) -> tuple[int, str]:
    """The evaluate stage's metrics first: they are what a reviewer asks about."""
    order = ("evaluate", "train", "split", "download")
    return next((i for i, name in enumerate(order) if f"/{name}/" in f"/{path}"), len(order)), path


def plots_section(plots: list[Rendered], folder: str | None) -> str:
    if folder is None:
        return "### Plots\n\nNot rendered: pass `--out FILE` to write them as PNG files beside the report."
    if not plots:
        return "### Plots\n\nNo plots on either side."
    lines = ["### Plots"]
    for plot in plots:
        if plot.file:
            lines.append(f"![{plot.title}]({folder}/{plot.file})")
        else:
            lines.append(f"{plot.title}: could not be rendered ({plot.error})")
    return "\n\n".join(lines)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def param(x) -> str:
    """A param value as params.yaml reads (null, true, 0.002, [10, 20], cnn)."""
    return f"`{x if isinstance(x, str) else json.dumps(x)}`"


def value(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return num(x)
    return f"`{x}`" if isinstance(x, str) else str(x)


def num(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.4g}" if abs(x) >= 1000 else f"{x:.4f}"


def signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.4f}"


def pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def points(x: float) -> str:
    return f"{100 * x:+.1f} points"


def span(interval) -> str:
    return f"{100 * interval.low:+.1f} to {100 * interval.high:+.1f}"


def p_value(p: float) -> str:
    return f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}" if p >= 0.001 else "p < 0.001"
