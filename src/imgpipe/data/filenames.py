"""Labels read from file names (`data.labels_from: filename`).

`data.filename_pattern` is a Python regular expression that must match the whole file name
without its image extension (`re.fullmatch` on `Abyssinian_12` for `Abyssinian_12.jpg`; a file
whose extension is not an image's is matched with it). It holds exactly one of two named groups:

- `label`: the group's text is the image's class (`(?P<label>.+)_\\d+` reads `Abyssinian_12` as
  `Abyssinian`); the download stage writes class folders, as for a folder-per-class source;
- `sequence`: one label per character position (`(?P<sequence>[a-z0-9]+)` reads `226md` as
  `p1=2 p2=2 p3=6 p4=m p5=d`), multi-label with one-of groups, decoded per position like
  `builtin:multidigit`. Every position offers every character seen in any position; when
  sequences differ in length, the shorter ones end in `p<i>=blank`.

Images anywhere below the source are read; a file whose name does not match is skipped and
reported, and none matching is an error. The source is only read. The pattern sees a name as the
tables write it (`imgpipe.data.readers.escape_name`: a byte that is not UTF-8 reads `%E9`), so
what it matches is what the report shows, and a label it takes is a name already escaped.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from imgpipe.core.errors import UserError
from imgpipe.core.progress import progress
from imgpipe.data.ingest import Report, SourceImage, inspect_file, list_files, source_name, split_folders
from imgpipe.data.labelsets import make_table, natural_sorted
from imgpipe.data.readers import IMAGE_EXTENSIONS, junk_reason

LABEL_GROUP = "label"
SEQUENCE_GROUP = "sequence"
BLANK = "blank"  # the value of a position after the end of a shorter sequence
NO_MATCH = "name does not match data.filename_pattern"
PATTERN_EXAMPLES = r"'(?P<label>.+)_\d+' for Abyssinian_12.jpg, '(?P<sequence>[a-z0-9]+)' for 226md.png"


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`data.filename_pattern`, compiled; a UserError when it is not a regex with one of the groups."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise UserError(
            f"data.filename_pattern: '{pattern}' is not a valid regular expression ({err}); e.g. {PATTERN_EXAMPLES}"
        ) from None
    groups = [g for g in (LABEL_GROUP, SEQUENCE_GROUP) if g in compiled.groupindex]
    if len(groups) != 1:
        have = "both" if groups else "neither"
        raise UserError(
            f"data.filename_pattern: '{pattern}' has {have} of the named groups (?P<{LABEL_GROUP}>...) "
            f"(the class) and (?P<{SEQUENCE_GROUP}>...) (one label per character); use one, e.g. {PATTERN_EXAMPLES}"
        )
    return compiled


def is_sequence(pattern: re.Pattern[str]) -> bool:
    return SEQUENCE_GROUP in pattern.groupindex


def matched_name(name: str) -> str:
    """The part of a file name the pattern must match: the name without its image extension."""
    suffix = PurePosixPath(name).suffix
    return name[: -len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else name


def scan_named_images(root: Path, pattern: re.Pattern[str], report: Report) -> list[tuple[SourceImage, str]]:
    """Every usable image below `root` whose name matches, with the text of its named group.

    Junk, undecodable files and names that do not match are skipped and reported. With `label`,
    images inside train/val/test folders at the top keep that split (`split.respect_existing`).
    """
    group = SEQUENCE_GROUP if is_sequence(pattern) else LABEL_GROUP
    splits = split_folders(root)
    found: list[tuple[SourceImage, str]] = []
    for path in progress(list_files(root), desc="check images"):
        origin = source_name(path, root)
        parts = PurePosixPath(origin).parts
        split = splits.get(parts[0], "") if len(parts) > 1 else ""
        match = pattern.fullmatch(matched_name(parts[-1]))
        if reason := junk_reason(origin):
            report.skip(origin, reason)
        elif splits and not split:
            report.skip(origin, "outside the train/val/test folders")
        elif match is None and path.suffix.lower() in IMAGE_EXTENSIONS:
            report.skip(origin, NO_MATCH)  # decoding it would only tell more about a file left out
        elif checked := inspect_file(path, origin, report):  # None: skipped with its reason
            text = match.group(group) or "" if match else ""
            if match is None:
                report.skip(origin, NO_MATCH)
            elif text in ("", ".", ".."):
                report.skip(origin, f"the {group} group of data.filename_pattern matched '{text}', not a name")
            else:
                info, digest = checked
                found.append((SourceImage(origin, origin, info, digest, label=text, split=split), text))
    if not found:
        raise UserError(
            f"data.filename_pattern: no image file name under '{root}' matches '{pattern.pattern}' "
            f"(matched against the name without its extension, e.g. "
            f"'{_example_name(report)}'); fix the pattern or data.source"
        )
    if splits and group == LABEL_GROUP:  # a multi-label table keeps no split on disk
        report.splits_on_disk = {
            s: sum(image.split == s for image, _ in found) for s in ("train", "val", "test") if s in splits.values()
        }
    return found


def _example_name(report: Report) -> str:
    names = [PurePosixPath(e["file"]).name for e in report.skipped if e["reason"] == NO_MATCH]
    return matched_name(names[0]) if names else "?"


def as_class_images(found: list[tuple[SourceImage, str]]) -> list[SourceImage]:
    """Single-label: each image filed under `<class>/<its path in the source>`."""
    return [
        SourceImage(image.origin, f"{label}/{image.origin}", image.info, image.digest, label=label, split=image.split)
        for image, label in found
    ]


def sequence_labels(sequences: list[str]) -> tuple[list[str], np.ndarray]:
    """`p<i>=<char>` labels (every character seen, per position, plus `blank` when lengths differ)
    and the (N, K) 0/1 targets of `sequences`."""
    length = max(len(s) for s in sequences)
    values = natural_sorted(sorted({c for s in sequences for c in s}))
    if any(len(s) < length for s in sequences):
        values.append(BLANK)
    labels = [f"p{i}={v}" for i in range(1, length + 1) for v in values]
    column = {name: k for k, name in enumerate(labels)}
    targets = np.zeros((len(sequences), len(labels)), np.uint8)  # (N, K)
    for row, text in enumerate(sequences):
        for i, value in enumerate([*text, *[BLANK] * (length - len(text))], start=1):
            targets[row, column[f"p{i}={value}"]] = 1
    return labels, targets


def as_sequence_table(found: list[tuple[SourceImage, str]], report: Report) -> pd.DataFrame:
    """Multi-label: the label table of the sequences, with the `origin`, `digest` and `info`
    columns `imgpipe.data.ingest.write_table` copies by."""
    images = [image for image, _ in found]
    sequences = [text for _, text in found]
    labels, targets = sequence_labels(sequences)
    lengths = sorted({len(s) for s in sequences})
    if len(lengths) > 1:
        report.notes.append(
            f"data.filename_pattern: sequences of {lengths[0]} to {lengths[-1]} characters; "
            f"positions after the end of a shorter one are labelled p<i>={BLANK}"
        )
    table = make_table([image.origin for image in images], labels, targets)
    return table.assign(
        origin=[image.origin for image in images],
        digest=[image.digest for image in images],
        info=[image.info for image in images],
    )
