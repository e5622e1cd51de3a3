"""The review of a pull request as one Markdown page: is the head better than the base, and by
more than noise? What params changed, every metric on both sides, the classes that moved, the
plots of both sides, and a warning when the head's committed results are stale."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from imgpipe.core.atomic import staged_outputs
from imgpipe.core.layout import OUTCOMES_FILE
from imgpipe.data.labelsets import natural_key
from imgpipe.review.defaults import RESAMPLES
from imgpipe.review.folds import folds_section, load_folds
from imgpipe.review.markdown import table
from imgpipe.review.plots import Rendered, render_plots
from imgpipe.review.revisions import (
    WORKSPACE,
    Revision,
    declared_outputs,
    find_repo,
    metrics_diff,
    params_diff,
    plots_diff,
    read_text,
    resolve,
    stale_stages,
    uncommitted_results,
)
from imgpipe.review.stats import ALPHA, LEVEL, Interval, Paired, Unpaired, compare_paired, compare_unpaired
from imgpipe.task.outcomes import Outcomes, loads


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
    outputs = declared_outputs(repo, revisions[1])
    stale = stale_stages(repo, revisions[1], outputs)
    uncommitted = uncommitted_results(repo, outputs) if revisions[1].workspace else []
    text = [
        header(*revisions),
        warning_notes(stale, uncommitted),
        verdict(*sides, resamples),
        params_section(params_diff(repo, *revisions)),
        folds_section(*(load_folds(repo, r) for r in revisions)),
        metrics_section(metrics_diff(repo, *revisions), list(outputs)),
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
    """The revision's per-image outcome record, wherever its dvc.yaml puts it."""
    path = next((p for p in declared_outputs(repo, revision) if Path(p).name == OUTCOMES_FILE), None)
    if path is None:
        return Side(revision, None, f"its dvc.yaml has no {OUTCOMES_FILE} output (a revision before `imgpipe review`)")
    text = read_text(repo, revision, path)
    if text is None:
        where = "in the workspace" if revision.workspace else "committed"
        return Side(revision, None, f"no {path} {where} (the pipeline has not run, or its results were not committed)")
    try:
        outcomes = loads(text)
    except ValueError as err:
        return Side(revision, None, f"{path}: {err}; rerun the evaluate stage")
    if not len(outcomes):
        return Side(revision, None, f"{path} records no test image")
    return Side(revision, outcomes)


def header(base: Revision, head: Revision) -> str:
    return f"## imgpipe review\n\n**Base** {base.describe()} · **Head** {head.describe()}"


def warning_notes(stale: dict[str, list[str]], uncommitted: list[str]) -> str:
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
        return title + unpaired(compare_unpaired(base.outcomes, head.outcomes, resamples), base.outcomes, head.outcomes, resamples)
    return title + paired(compare_paired(base.outcomes, head.outcomes, resamples), base.outcomes, resamples)


def paired(result: Paired, outcomes: Outcomes, resamples: int) -> str:
    accuracy = outcomes.kind.accuracy_name
    n = result.images
    if not result.changed_decisions:
        unit = outcomes.kind.unit
        return (
            f"**No change in test outcomes**: both models predict the same {unit} for each of the {n} "
            "test images, so every test metric is the same."
        )
    net = result.only_head - result.only_base
    lines = [
        f"- **{accuracy}** {pct(result.accuracy[0])} → {pct(result.accuracy[1])}: "
        f"**{points(result.accuracy[1] - result.accuracy[0])} ({net:+d} {plural(net, 'image')})**; "
        f"{LEVEL} interval {span(result.accuracy_change)}; "
        f"{'**significant**' if result.significant else 'not significant'}, {p_value(result.p_value)}",
        f"- **Macro F1** {pct(result.f1_macro[0])} → {pct(result.f1_macro[1])}: "
        + change_line(result.f1_macro[1] - result.f1_macro[0], result.f1_macro_change),
        f"- **{recall_name(outcomes)}** {pct(result.recall_macro[0])} → {pct(result.recall_macro[1])}: "
        + change_line(result.recall_macro[1] - result.recall_macro[0], result.recall_macro_change),
    ]
    about = (
        f"Both models scored the same {n} test images. Exact McNemar test on the images only one model "
        f"gets right ({result.only_base} only the base, {result.only_head} only the head; "
        f"{result.changed_decisions} {plural(result.changed_decisions, 'image')} predicted differently); "
        f"significant means p < {ALPHA:g}. Intervals: paired bootstrap over the test images, {resamples} resamples."
    )
    return "\n".join(lines) + "\n\n" + about + "\n\n" + classes_section(result)


def recall_name(outcomes: Outcomes) -> str:
    """Macro recall by the name single-label data knows it by: the mean per-class recall is balanced accuracy."""
    return "Balanced accuracy (macro recall)" if outcomes.task == "multiclass" else "Macro recall"


def change_line(delta: float, interval: Interval) -> str:
    """`+1.2 points; 95% interval -0.5 to +2.9 (within noise)`."""
    noise = "beyond noise" if interval.excludes_zero() else "within noise"
    return f"{points(delta)}; {LEVEL} interval {span(interval)} ({noise})"


def classes_section(result: Paired) -> str:
    moved = [c for c in result.classes if c.change.excludes_zero()]
    title = f"#### Classes whose F1 moved beyond noise ({len(moved)} of {len(result.classes)})\n\n"
    if not moved:
        return title + f"None: no class's {LEVEL} interval for the change in its F1 excludes zero."
    rows = [[c.name, num(c.base), num(c.head), signed(c.head - c.base), f"{c.change.low:+.3f} to {c.change.high:+.3f}"]
            for c in sorted(moved, key=lambda c: c.head - c.base)]
    note = f"\n\nPer-class paired bootstrap intervals ({LEVEL}), not corrected for the number of classes compared."
    return title + table(["class", "base F1", "head F1", "change", f"{LEVEL} interval"], rows) + note


def unpaired(result: Unpaired, base: Outcomes, head: Outcomes, resamples: int) -> str:
    rows = [
        [name, str(side.images), with_interval(side.accuracy, side.accuracy_interval),
         with_interval(side.f1_macro, side.f1_macro_interval), with_interval(side.recall_macro, side.recall_macro_interval)]
        for name, side in (("base", result.base), ("head", result.head))
    ]
    changes = [
        "- **Accuracy** " + change_line(result.head.accuracy - result.base.accuracy, result.accuracy_change),
        "- **Macro F1** " + change_line(result.head.f1_macro - result.base.f1_macro, result.f1_macro_change),
        f"- **{recall_name(head)}** " + change_line(result.head.recall_macro - result.base.recall_macro, result.recall_macro_change),
    ]
    return (
        f"**The test sets differ** (base {base.test_set[:12]}, {len(base)} images; head {head.test_set[:12]}, "
        f"{len(head)} images): the data or the split changed, so the two models cannot be paired image by image "
        f"and no paired test applies. Each side on its own test set, with its own {LEVEL} bootstrap interval "
        f"({resamples} resamples):\n\n"
        + table(["side", "test images", "accuracy", "macro F1", recall_name(head).lower()], rows)
        + "\n\nThe change, between independent resamples of the two test sets (it mixes the models' "
        "difference with the test sets' difference):\n\n" + "\n".join(changes)
    )


def params_section(changed: dict[str, tuple]) -> str:
    if not changed:
        return "### Params changed\n\nNone."
    rows = [[f"`{key}`", param(old), param(new)] for key, (old, new) in sorted(changed.items())]
    return "### Params changed\n\n" + table(["param", "base", "head"], rows)


def metrics_section(metrics: dict[str, dict[str, tuple]], pipeline_order: list[str]) -> str:
    """Changed metrics in a table, unchanged ones folded away below it; the last stage's first."""
    if not metrics:
        return "### Metrics\n\nNo metrics on either side."
    changed, same = [], []
    rank = {path: i for i, path in enumerate(reversed(pipeline_order))}
    for path in sorted(metrics, key=lambda p: (rank.get(p, len(rank)), p)):
        for key, (old, new) in sorted(metrics[path].items(), key=lambda item: natural_key(item[0])):
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


def plural(count: int, word: str) -> str:
    return word if abs(count) == 1 else word + "s"


def with_interval(x: float, interval: Interval) -> str:
    return f"{pct(x)} ({pct(interval.low)} to {pct(interval.high)})"


def span(interval: Interval) -> str:
    return f"{100 * interval.low:+.1f} to {100 * interval.high:+.1f}"


def p_value(p: float) -> str:
    """Never rounded across the threshold: p = 0.0496 is not written 0.05."""
    return f"p = {p:.2f}" if p >= 0.1 else f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"
