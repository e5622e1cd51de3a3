"""Read a user's multi-label dataset: a folder of images plus ONE annotation source.

Three annotation formats, all normalised to `imgpipe.data.labelsets.make_table`:

1. a CSV/TSV file with an image column and one labels column, labels joined by `|`, `;`, `,` or space
   (`4.jpg,"desert,mountains"`, `train_9516,clear primary water`);
2. a CSV/TSV file with an image column and one 0/1 column per label (one-hot);
3. a folder `annotations/` (or `labels/`) of `<label>.txt` files, each listing image ids one per line;
   images that no file lists are all-negative examples.

Image names may carry or lack the extension and may be a path relative to the source or a bare file
name, as the file system has it or as the tables write it (`imgpipe.data.readers.escape_name`:
`caf%E9.png` for a name that is not UTF-8; the table's paths are the escaped ones). Anomalies
that do not stop the run (rows naming missing images, images no row names, duplicate
rows) come back as report lines; anything that makes the labels untrustworthy is a one-line UserError.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from imgpipe.core.errors import UserError
from imgpipe.data.labelsets import make_table, natural_sorted
from imgpipe.data.readers import escape_name, list_images

TABLE_SUFFIXES = (".csv", ".tsv")
FOLDER_NAMES = ("annotations", "labels")
IMAGE_COLUMN_NAMES = ("image", "image_name", "image_id", "filename", "file", "path", "id", "img", "name")
LABELS_COLUMN_NAMES = ("labels", "tags", "label", "classes")
LABEL_DELIMITERS = ("|", ";", ",", " ")  # first present wins; space last since label names may hold spaces
ONE_HOT = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
PREVIEW = 5

Rows = list[tuple[str, set[str]]]  # (image id as written, its labels)


def find_annotations(source: Path) -> Path | None:
    """Detect the annotation source inside `source`: a single .csv/.tsv file at the top level of `source`, or a
    top-level folder named `annotations` (or `labels`) holding only `<label>.txt` files. None when there is none;
    UserError when ambiguous (several candidate files: name them and say to set data.annotations)."""
    source = Path(source)
    if not source.is_dir():
        return None
    entries = sorted(p for p in source.iterdir() if not p.name.startswith("."))
    found = [p for p in entries if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES]
    found += [p for p in entries if p.is_dir() and p.name.lower() in FOLDER_NAMES and _is_label_folder(p)]
    if len(found) > 1:
        names = ", ".join(sorted(p.name for p in found))
        raise UserError(f"data.source '{source}': several annotation sources ({names}); set data.annotations to one")
    return found[0] if found else None


def _is_label_folder(folder: Path) -> bool:
    """A folder with at least one file, all visible files being .txt (hidden files like .DS_Store are noise)."""
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(files) and all(p.is_file() and p.suffix.lower() == ".txt" for p in files)


def read_label_source(
    source: Path, annotations: str | None = None, image_column: str | None = None, labels_column: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Returns (table, report). table = make_table(paths, labels, targets) where paths are image paths RELATIVE TO
    `source` (posix strings), every image in the table exists. report = human-readable lines (strings) describing
    anomalies, empty when none."""
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"data.source: folder '{source}' does not exist")
    ann = resolve_annotations(source, annotations)
    images = [p for p in list_images(source) if p != ann and ann not in p.parents]
    index = ImageIndex(escape_name(p.relative_to(source).as_posix()) for p in images)
    if not index.paths:
        raise UserError(f"data.source '{source}': no images found beside the annotations '{ann.name}'; add images")
    if ann.is_dir():
        return _read_folder_source(ann, index)
    return _read_table_source(ann, index, image_column, labels_column)


def resolve_annotations(source: Path, annotations: str | None) -> Path:
    """The annotation file or folder `data.annotations` names in `source`, or the one detected there."""
    if annotations is None:
        found = find_annotations(source)
        if found is None:
            raise UserError(
                f"data.source '{source}': no annotation file (.csv/.tsv) or annotations/ folder found; "
                "set data.annotations"
            )
        return found
    path = source / annotations
    if not path.exists():
        raise UserError(f"data.annotations: '{annotations}' not found in '{source}'; give a path relative to it")
    return path


class ImageIndex:
    """Resolves the ids an annotation file writes to image paths relative to the source, as
    `escape_name` writes them."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(paths)
        # Most specific form first, so `sub/a.png` is never ambiguous with `other/a.png`.
        self.levels: list[dict[str, list[str]]] = [{}, {}, {}, {}]
        for path in self.paths:
            pure = PurePosixPath(path)
            keys = (path, str(pure.with_suffix("")), pure.name, pure.stem)
            for level, key in zip(self.levels, keys, strict=True):
                level.setdefault(key, []).append(path)

    def lookup(self, image_id: str) -> list[str]:
        """[] when no image matches, [path] when one does, several paths when the id is ambiguous."""
        key = image_id.strip().replace("\\", "/").removeprefix("./")
        for candidate in dict.fromkeys((key, escape_name(key))):  # `caf%E9.png` as written, then `100%41.png`
            for level in self.levels:
                if candidate in level:
                    return level[candidate]
        return []


def _preview(names: Sequence[str]) -> str:
    more = f" (+{len(names) - PREVIEW} more)" if len(names) > PREVIEW else ""
    return ", ".join(f"'{n}'" for n in names[:PREVIEW]) + more


def _match_rows(rows: Rows, index: ImageIndex, where: str, merge_note: bool) -> tuple[dict[str, set[str]], list[str]]:
    """Image path -> union of its labels; rows that match no image (or several) are dropped and reported."""
    matched: dict[str, set[str]] = {}
    # dicts as ordered sets: report each name once, in file order
    missing: dict[str, None] = {}
    ambiguous: dict[str, None] = {}
    repeated: dict[str, None] = {}
    blank = 0
    for image_id, labels in rows:
        hits = index.lookup(image_id)
        if not image_id.strip():
            blank += 1
        elif not hits:
            missing[image_id] = None
        elif len(hits) > 1:
            ambiguous[f"{image_id} ({' or '.join(hits[:2])})"] = None
        else:
            if hits[0] in matched:
                repeated[hits[0]] = None
            matched.setdefault(hits[0], set()).update(labels)
    report = []
    if blank:
        report.append(f"{where}: {blank} row(s) with an empty image name dropped")
    if missing:
        report.append(
            f"{where}: {len(missing)} name(s) match no image under the source, dropped: {_preview([*missing])}"
        )
    if ambiguous:
        report.append(f"{where}: {len(ambiguous)} name(s) match several images, dropped: {_preview([*ambiguous])}")
    if repeated and merge_note:
        report.append(f"{where}: {len(repeated)} image(s) on several rows, labels merged: {_preview([*repeated])}")
    return matched, report


def _build_table(matched: dict[str, set[str]], labels: list[str]) -> pd.DataFrame:
    paths = sorted(matched)
    column = {name: k for k, name in enumerate(labels)}
    targets = np.zeros((len(paths), len(labels)), dtype=np.uint8)
    for i, path in enumerate(paths):
        for name in matched[path]:
            targets[i, column[name]] = 1
    return make_table(paths, labels, targets)


def _sorted_labels(names: Iterable[str]) -> list[str]:
    """Same order as single-label class names (`natural_sorted`)."""
    return natural_sorted(set(names))


# --- format 3: a folder of <label>.txt files ---------------------------------------------------------------


def _read_folder_source(folder: Path, index: ImageIndex) -> tuple[pd.DataFrame, list[str]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise UserError(f"annotation folder {folder}: no <label>.txt files; add one file per label listing image ids")
    rows: Rows = []
    for file in files:
        lines = _read_text(file).splitlines()
        rows += [(line.strip(), {escape_name(file.stem)}) for line in lines if line.strip()]
    if not rows:
        raise UserError(f"annotation folder {folder}: every .txt file is empty; list image ids, one per line")
    matched, report = _match_rows(rows, index, f"annotation folder {folder}", merge_note=False)
    others = sorted(escape_name(p.name) for p in folder.iterdir() if not p.name.startswith(".") and p not in files)
    if others:
        report.append(f"annotation folder {folder}: non-.txt entries ignored: {_preview(others)}")
    for path in index.paths:  # images no file lists are valid all-negative examples
        matched.setdefault(path, set())
    return _build_table(matched, _sorted_labels(escape_name(f.stem) for f in files)), report


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"annotation file {path}: not UTF-8 text ({err.reason}); save it as UTF-8") from None


# --- formats 1 and 2: one CSV/TSV file ----------------------------------------------------------------------


def _read_table_source(
    path: Path, index: ImageIndex, image_column: str | None, labels_column: str | None
) -> tuple[pd.DataFrame, list[str]]:
    table = _read_table_file(path)
    image_col = _find_image_column(table, path, image_column, index)
    kind, columns = _choose_format(table, path, image_col, labels_column)
    ids = table[image_col].tolist()
    if kind == "one-hot":
        rows, labels = _one_hot_rows(table, ids, columns), columns
    else:
        rows = _joined_rows(table[columns[0]].tolist(), ids, path, columns[0])
        labels = _sorted_labels(name for _, names in rows for name in names)
    where = f"annotation file {path}"
    matched, report = _match_rows(rows, index, where, merge_note=True)
    if not matched:
        raise UserError(
            f"{where}: no row names an image under the source (e.g. {_preview(ids)}); check column "
            f"'{image_col}' holds image file names or paths relative to the source"
        )
    ignored = [c for c in table.columns if c != image_col and c not in columns]
    if ignored:
        report.append(f"{where}: column(s) ignored: {_preview(ignored)}")
    unnamed = [p for p in index.paths if p not in matched]
    if unnamed:
        report.append(f"{where}: {len(unnamed)} image(s) named by no row, left out: {_preview(unnamed)}")
    return _build_table(matched, labels), report


def _read_table_file(path: Path) -> pd.DataFrame:
    """Every cell as a stripped string (`02` stays `02`, empty stays empty); header names stripped."""
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"annotation file {path}: file is empty; add a header and one row per image")
    sep = _sniff_separator(text.splitlines()[0], path.suffix.lower())
    try:
        table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split())
        raise UserError(f"annotation file {path}: cannot read it ({reason}); quote cells that hold '{sep}'") from None
    if table.empty:
        raise UserError(f"annotation file {path}: no rows under the header; add one row per image")
    table.columns = [str(c).strip() for c in table.columns]
    return table.fillna("").apply(lambda col: col.str.strip())


def _sniff_separator(header: str, suffix: str) -> str:
    counts = {sep: header.count(sep) for sep in ("\t", ",", ";")}
    best = max(counts, key=counts.__getitem__)  # ties go to the earlier one: tab, comma, semicolon
    if counts[best]:
        return best
    return "\t" if suffix == ".tsv" else ","


def _find_image_column(table: pd.DataFrame, path: Path, image_column: str | None, index: ImageIndex) -> str:
    columns = list(table.columns)
    if image_column is not None:
        if image_column not in columns:
            raise UserError(
                f"annotation file {path}: data.image_column '{image_column}' is not a column "
                f"(columns: {', '.join(columns)})"
            )
        return image_column
    lowered = {c.lower(): c for c in reversed(columns)}  # reversed: the first of equal names wins
    for name in IMAGE_COLUMN_NAMES:
        if name in lowered:
            return lowered[name]
    if _looks_like_image_ids(table[columns[0]], index):
        return columns[0]
    raise UserError(
        f"annotation file {path}: cannot find the image column; set data.image_column (columns: {', '.join(columns)})"
    )


def _looks_like_image_ids(values: pd.Series, index: ImageIndex) -> bool:
    """A 0/1 column is a label, not ids, even where images happen to be named 0.png and 1.png."""
    return not _is_one_hot(values) and any(len(index.lookup(v)) == 1 for v in values)


def _is_one_hot(values: pd.Series) -> bool:
    return bool(values.isin(ONE_HOT.keys()).all())


def _choose_format(table: pd.DataFrame, path: Path, image_col: str, labels_column: str | None) -> tuple[str, list[str]]:
    """('one-hot', label columns) or ('joined', [labels column])."""
    others = [c for c in table.columns if c != image_col]
    where = f"annotation file {path}"
    if labels_column is not None:
        if labels_column not in others:
            raise UserError(
                f"{where}: data.labels_column '{labels_column}' is not a label column "
                f"(columns: {', '.join(table.columns)})"
            )
        return "joined", [labels_column]
    if not others:
        raise UserError(f"{where}: no label column beside the image column '{image_col}'; add labels")
    binary = [c for c in others if _is_one_hot(table[c])]
    if len(binary) == len(others):
        return "one-hot", others
    if len(others) == 1:
        return "joined", others
    named = [c for c in others if c.lower() in LABELS_COLUMN_NAMES]
    if len(named) == 1 and not binary:
        return "joined", named
    if named and binary:
        raise UserError(
            f"{where}: labels column {_preview(named)} mixed with 0/1 columns ({_preview(binary)}); "
            "keep one format or set data.labels_column"
        )
    if binary:
        _raise_bad_one_hot(table, [c for c in others if c not in binary], where)
    raise UserError(
        f"{where}: cannot tell which column holds the labels (columns: {', '.join(table.columns)}); "
        "set data.labels_column"
    )


def _raise_bad_one_hot(table: pd.DataFrame, columns: list[str], where: str) -> None:
    """The first non-0/1 cell of a would-be one-hot column: usually a typo'd header or a stray column."""
    column = columns[0]
    bad = ~table[column].isin(ONE_HOT.keys())
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise UserError(
        f"{where}: one-hot column '{column}' holds '{table[column].iloc[row]}' on data row {row + 1}, "
        "not 0/1; fix the value or the header, or remove the column"
    )


def _one_hot_rows(table: pd.DataFrame, ids: list[str], columns: list[str]) -> Rows:
    values = table[columns].to_numpy()
    return [
        (image_id, {name for name, v in zip(columns, row, strict=True) if ONE_HOT[v]})
        for image_id, row in zip(ids, values, strict=True)
    ]


def _joined_rows(cells: list[str], ids: list[str], path: Path, column: str) -> Rows:
    delimiter = _label_delimiter(cells, path, column)
    rows: Rows = []
    for image_id, cell in zip(ids, cells, strict=True):
        if delimiter is None:
            parts = [cell]  # one label per cell
        else:
            parts = cell.split() if delimiter == " " else cell.split(delimiter)
        rows.append((image_id, {p.strip() for p in parts if p.strip()}))
    return rows


def _label_delimiter(cells: list[str], path: Path, column: str) -> str | None:
    """The first of `| ; , space` that occurs; a cell using another punctuation delimiter instead is an error."""
    present = [d for d in LABEL_DELIMITERS if any(d in cell for cell in cells)]
    if not present:
        return None
    chosen = present[0]
    for cell in cells:
        other = next((d for d in LABEL_DELIMITERS[:3] if d != chosen and d in cell), None)
        if other and chosen not in cell:
            first = next(c for c in cells if chosen in c)
            raise UserError(
                f"annotation file {path}: label column '{column}' mixing formats ('{first}' uses "
                f"'{chosen}', '{cell}' uses '{other}'); use one delimiter between labels"
            )
    return chosen
