"""Load a member/non-member set from a local file or folder, or from the Hugging Face hub.

Sources, tried in this order:

* a folder written by ``datasets.save_to_disk`` (a ``DatasetDict`` -> pick ``split``, or one
  ``Dataset``);
* a folder of data files, where ``split`` names a file by its stem (``wikimia`` + ``32`` ->
  ``wikimia/32.jsonl``);
* one JSONL / JSON / CSV / Parquet file (chosen by extension; the text formats may be
  gzip-compressed, and a UTF-8 byte-order mark is dropped);
* a hub dataset name (``wjfu99/WikiMIA-24``) loaded with ``datasets.load_dataset``.

Rows are checked by :func:`mia_tuner.data.validation.validate` (``skip_invalid`` drops bad rows).
Nothing is truncated or deduplicated here: the scoring engine truncates to its token budget and
:func:`mia_tuner.data.split.make_split` deduplicates.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
import json
import re
from pathlib import Path

from mia_tuner.config import DataConfig
from mia_tuner.data.types import MembershipSet
from mia_tuner.data.validation import validate
from mia_tuner.errors import DataError

FILE_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = ("jsonl", "json", "csv")  # read through _read_text: UTF-8, maybe gzip-compressed
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def load_membership_set(config: DataConfig | str, split: str | None = None, **overrides) -> MembershipSet:
    """Load texts and 0/1 labels (1 = member) described by ``config`` into a MembershipSet.

    ``config`` is a DataConfig or just its ``path``; ``split`` and keyword ``overrides``
    (any DataConfig field, e.g. ``text_column="text"``) replace the config's values.
    The result's ``name`` is like ``"wikimia24/WikiMIA_length32"`` or ``"wikimia/32"``; its
    ``info`` records the source, its kind, the split, the columns and the skipped rows.
    """
    config = resolve_config(config, split, **overrides)
    if not config.path:
        raise DataError("no data path given: pass --data with a file, a folder or a hub dataset name")
    columns, name, info = read_columns(config.path, config.split)
    texts = _column(columns, config.text_column, "text", info)
    labels = _column(columns, config.label_column, "label", info)
    numbers, unit = (info["row_lines"], "line") if "row_lines" in info else (None, "row")
    try:
        texts, labels, skipped = validate(texts, labels, skip_invalid=config.skip_invalid,
                                          row_numbers=numbers, unit=unit)
    except DataError as error:
        raise DataError(f"{name} ({info['source']}): {error}") from None
    info.pop("row_lines", None)
    info.update(
        text_column=config.text_column,
        label_column=config.label_column,
        n_rows_read=len(columns[config.text_column]),
        n_skipped=skipped,
        skip_invalid=config.skip_invalid,  # how later checks (token counts) treat a bad text
    )
    return MembershipSet(texts=texts, labels=labels, name=name, info=info)


def resolve_config(config: DataConfig | str, split: str | None = None, **overrides) -> DataConfig:
    """Turn a path or DataConfig plus a split and field overrides into one DataConfig."""
    if isinstance(config, (str, Path)):
        config = DataConfig(path=str(config))
    elif not isinstance(config, DataConfig):
        raise DataError(f"expected a DataConfig or a path, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise DataError(f"unknown data option(s) {unknown}; valid options: {sorted(fields)}")
    if split is not None:
        overrides["split"] = split
    return dataclasses.replace(config, **overrides)


def read_columns(path: str, split: str | None) -> tuple[dict[str, list], str, dict]:
    """Read every column of the source; return (columns, set name, info)."""
    local = Path(path).expanduser()
    if local.is_dir():
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            return _read_saved_dataset(local, split)
        file = _file_in_folder(local, split)
        return _read_file(file, file_stem(file))
    if local.is_file():
        if split is not None and split != file_stem(local):
            raise DataError(
                f"{local} is a single file and has no splits; drop --split {split} "
                f"(or pass the folder {local.parent} with --split {file_stem(local)})"
            )
        return _read_file(local, split)
    return _read_hub(path, split)


def _column(columns: dict[str, list], column: str, role: str, info: dict) -> list:
    """One column by name, or a DataError naming it and listing the available columns."""
    if column not in columns:
        raise DataError(
            f"{info['source']}: no {role} column {column!r}; available columns: "
            f"{sorted(columns)} (choose one with --{role}-column)"
        )
    return columns[column]


def available_splits(path: str) -> list[str] | None:
    """The split names of a local save_to_disk DatasetDict folder or folder of data files;
    None for anything else (a file, a single dataset, a hub name)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    manifest = folder / "dataset_dict.json"
    if manifest.is_file():
        return list(json.loads(manifest.read_text(encoding="utf-8")).get("splits", [])) or None
    files = sorted(file_stem(p) for p in folder.iterdir() if p.is_file() and file_kind(p))
    return files or None


def _choose_split(available: list[str], split: str | None, source: str) -> str:
    """The split to use: the requested one, or the only one; else a DataError listing them."""
    if split is None:
        if len(available) == 1:
            return available[0]
        raise DataError(f"{source} has several splits; choose one with --split: {available}")
    if split not in available:
        raise DataError(f"{source} has no split {split!r}; available splits: {available}")
    return split


def _read_saved_dataset(folder: Path, split: str | None):
    """Read a ``datasets.save_to_disk`` folder (DatasetDict or Dataset)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as error:  # noqa: BLE001 - reported with its cause
        raise DataError(f"could not read the saved dataset folder {folder}: {error}") from error
    if isinstance(loaded, datasets.DatasetDict):
        split = _choose_split(list(loaded.keys()), split, str(folder))
        dataset, name = loaded[split], f"{folder.name}/{split}"
    else:
        if split is not None:
            raise DataError(f"{folder} holds one dataset without splits; drop --split {split}")
        dataset, name = loaded, folder.name
    info = {"source": str(folder), "source_type": "save_to_disk", "split": split,
            "columns": list(dataset.column_names)}
    return dataset.to_dict(), name, info


def _file_in_folder(folder: Path, split: str | None) -> Path:
    """In a folder of data files, the file whose stem is ``split``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and file_kind(p))
    if not files:
        raise DataError(
            f"{folder} is neither a datasets.save_to_disk folder nor a folder of data files "
            f"({', '.join(FILE_FORMATS)})"
        )
    stems = [file_stem(p) for p in files]
    chosen = _choose_split(stems, split, str(folder))
    return files[stems.index(chosen)]


def _read_file(file: Path, split: str | None):
    """Read one JSONL / JSON / CSV / Parquet file into columns."""
    kind = file_kind(file)
    if kind is None:
        raise DataError(f"{file}: unsupported file type {file.suffix!r}; supported: {list(FILE_FORMATS)} "
                        "(JSONL, JSON and CSV also gzip-compressed, as .jsonl.gz ...)")
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    try:
        columns = readers[kind](file)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - reported with its cause
        raise DataError(f"could not read {file} as {kind}: {error}") from error
    lines = columns.pop(_LINES, None)
    if not any(len(values) for values in columns.values()):
        raise DataError(f"{file} has no rows (the file is empty)")
    stem = file_stem(file)
    name = f"{file.parent.name}/{stem}" if file.parent.name else stem
    info = {"source": str(file), "source_type": kind, "split": split, "columns": list(columns)}
    if lines is not None:
        info["row_lines"] = lines
    return columns, name, info


_LINES = object()  # key of the JSONL reader's line numbers among the columns


GZIP_MAGIC = b"\x1f\x8b"


def file_kind(file: Path) -> str | None:
    """The format of a data file by its name (``.jsonl``, or ``.jsonl.gz`` compressed), or None."""
    suffixes = [s.lower() for s in file.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        kind = FILE_FORMATS.get(suffixes[0]) if len(suffixes) == 2 else None
        return kind if kind in TEXT_FORMATS else None
    return FILE_FORMATS.get(file.suffix.lower())


def file_stem(file: Path) -> str:
    """The name without its format suffixes: ``32.jsonl.gz`` -> ``32``."""
    return Path(file.stem).stem if file.suffix.lower() == ".gz" else file.stem


def read_text_file(file: Path) -> str:
    """The file as UTF-8 text, a byte-order mark dropped (spreadsheet programs write one) and
    gzip-compressed content unpacked, whatever the file's name; a DataError naming the line of
    the first bad byte."""
    raw = file.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{file} is gzip-compressed but cannot be unpacked ({error}): "
                            "the file is damaged or cut short") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        start = error.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
        line = raw[:start].count(b"\n") + 1
        raise DataError(f"{file}, line {line}: not UTF-8 text (byte {raw[start]:#04x}); "
                        "save the file as UTF-8") from None


def _rows_to_columns(rows: list, source: Path, lines: list[int] | None = None) -> dict[str, list]:
    """Column lists from row objects; a key missing from a row reads as None."""
    keys: dict[str, None] = {}
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            where = f"line {lines[number]}" if lines else f"record {number + 1}"
            raise DataError(f"{source}, {where}: a {type(row).__name__}, expected an object")
        keys.update(dict.fromkeys(row))
    return {key: [row.get(key) for row in rows] for key in keys}


def _read_jsonl(file: Path) -> dict[str, list]:
    """One JSON object per line; blank lines are ignored. The line of each row is kept (under
    ``_LINES``) so that validation errors name file lines."""
    rows, lines = [], []
    for line_number, line in enumerate(read_text_file(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(f"{file}, line {line_number}: not valid JSON ({error})") from None
        lines.append(line_number)
    columns = _rows_to_columns(rows, file, lines)
    columns[_LINES] = lines
    return columns


def _read_json(file: Path) -> dict[str, list]:
    """A JSON list of objects, or an object of equally long column lists."""
    try:
        data = json.loads(read_text_file(file))
    except json.JSONDecodeError as error:
        raise DataError(f"{file}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if isinstance(data, list):
        return _rows_to_columns(data, file)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DataError(f"{file}: columns have different lengths {sorted(lengths)}")
        return {key: list(values) for key, values in data.items()}
    raise DataError(f"{file}: expected a list of objects or an object of column lists")


CSV_DELIMITERS = ";\t|"  # besides the comma: what spreadsheet programs write in some locales


def csv_delimiter(text: str) -> str:
    """The comma, unless the header row holds none: then the delimiter ``csv.Sniffer`` finds
    among ``CSV_DELIMITERS`` in the first lines (a semicolon-separated export, say)."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _read_csv(file: Path) -> dict[str, list]:
    """A CSV file with a header row (comma-separated, or by another delimiter that
    :func:`csv_delimiter` recognises); every cell is a string (labels are parsed later)."""
    text = read_text_file(file)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text))
    rows = list(reader)
    fields = list(reader.fieldnames or [])
    return {key: [row.get(key) for row in rows] for key in fields}


def _read_parquet(file: Path) -> dict[str, list]:
    """A Parquet file, every column."""
    import pyarrow.parquet as pq

    return pq.read_table(file).to_pydict()


def _read_hub(path: str, split: str | None):
    """Load a hub dataset with ``datasets.load_dataset``; any failure becomes a DataError."""
    if not _HUB_NAME.match(path) or file_kind(Path(path)):
        raise DataError(f"{path!r}: no such local file or folder (and not a hub dataset name)")
    from mia_tuner.hub import hub_unreachable

    if reason := hub_unreachable():  # fail at once instead of after a minute of retries
        raise DataError(f"{path!r}: no such local file or folder, and the Hugging Face hub, where "
                        f"it would be a dataset name, cannot be reached ({reason})")
    import datasets

    try:
        loaded = datasets.load_dataset(path)
    except Exception as error:  # noqa: BLE001 - reported with its cause
        raise DataError(
            f"{path!r} is neither a local file/folder nor reachable on the Hugging Face hub "
            f"({type(error).__name__}: {error})"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        split = _choose_split(list(loaded.keys()), split, f"hub dataset {path}")
        dataset = loaded[split]
    elif split is not None:
        raise DataError(f"hub dataset {path} has no splits; drop --split {split}")
    else:
        dataset = loaded
    name = f"{path.rsplit('/', 1)[-1]}/{split}" if split else path.rsplit("/", 1)[-1]
    info = {"source": path, "source_type": "hub", "split": split, "columns": list(dataset.column_names)}
    return dataset.to_dict(), name, info
