"""Read Foursquare check-in files (TSMC2014) into the canonical check-in frame.

Two layouts are recognised from the content (never from the file name):

- ``"raw"``: the TSMC2014 file as distributed: tab-separated, no header, 8 columns (user id,
  venue id, category id, category name, latitude, longitude, timezone offset in minutes,
  UTC time like ``Tue Apr 03 18:00:09 +0000 2012``), Latin-1.
- ``"csv"``: comma-separated with the header
  ``userId,venueId,venueCategoryId,venueCategory,latitude,longitude,timezoneOffset,utcTimestamp``
  (columns in any order, RFC 4180 quoting allowed). A tab-separated file with that header is
  read too (``"tsv"``).

Either may be gzip- or zip-compressed (detected by magic bytes; a zip must hold one data file).
Text is decoded as UTF-8 when the whole file is valid UTF-8 (a leading BOM is dropped), else as
Latin-1; this holds for the raw layout too, so a raw file re-saved as UTF-8 still reads right. (A
Latin-1 file whose every non-ASCII run is also valid UTF-8, such as "Â¡", would be read as UTF-8;
real category names never look like that.) A non-UTF-8 file with bytes 0x80-0x9F, control codes
in Latin-1 (e.g. Windows-1252 quotes), is refused as an unknown encoding.

The canonical frame has the columns of ``COLUMNS`` in file order: ``user``, ``venue``,
``category_id``, ``category`` (str, surrounding whitespace stripped from all four), ``latitude``,
``longitude`` (float64), ``tz_offset`` (int64, minutes) and ``utc_time`` (datetime64[ns], naive
UTC; other ``+hhmm`` offsets in the timestamp are converted to UTC).

Bad rows raise ``DataError`` naming the first bad line (1-based, counting every physical line of
the file, header included; rows with the wrong number of columns are looked for before bad values)
and column; with ``skip_bad_rows=True`` they are dropped and counted by reason in
``LoadResult.skipped``. Blank lines are ignored. Exact duplicate rows (equal in
every column after parsing) are always dropped, keeping the first, and counted under
``"duplicate row"``; they are not errors. Note that the reconstructed NYC subset has 386 such
rows (timestamps there are truncated to the minute), so it loads as 147,532 of its 147,918 rows.

Numbers are parsed by pandas' fast C parser: a coordinate may differ from Python's ``float()``
in the last bit (about 1e-16 relative).

The string columns share one Python ``str`` object per distinct value, so a million-row file
costs about 8 bytes per row per string column beyond its distinct values.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedlab.errors import DataError

COLUMNS = ("user", "venue", "category_id", "category", "latitude", "longitude", "tz_offset", "utc_time")
STRING_COLUMNS = COLUMNS[:4]
# Header names of the CSV variant, in the canonical column order.
CSV_HEADER = (
    "userId",
    "venueId",
    "venueCategoryId",
    "venueCategory",
    "latitude",
    "longitude",
    "timezoneOffset",
    "utcTimestamp",
)
TIMESTAMP_FORMAT = "%a %b %d %H:%M:%S %z %Y"
TIMESTAMP_EXAMPLE = "Tue Apr 03 18:00:09 +0000 2012"

RAW_FORMAT, CSV_FORMAT, TSV_FORMAT = "raw", "csv", "tsv"
DUPLICATE = "duplicate row"
WRONG_COLUMNS = "wrong number of columns"
SKIP_HINT = "Fix or delete that row, or turn on skipping bad rows."

# Row problems, in the order they are checked; a row is counted under the first that applies.
# reason -> (canonical column, what the value must be)
_ROW_PROBLEMS: dict[str, tuple[str | None, str]] = {
    WRONG_COLUMNS: (None, "every row needs exactly 8 columns"),
    "missing user id": ("user", "every check-in needs a user id"),
    "missing venue id": ("venue", "every check-in needs a venue id"),
    "missing category id": ("category_id", "every check-in needs a venue category id"),
    "missing category": ("category", "every check-in needs a venue category name"),
    "non-numeric latitude": ("latitude", "latitude must be a decimal number such as 40.7128"),
    "latitude out of range": ("latitude", "latitude must be between -90 and 90"),
    "non-numeric longitude": ("longitude", "longitude must be a decimal number such as -74.0060"),
    "longitude out of range": ("longitude", "longitude must be between -180 and 180"),
    "non-integer timezone offset": ("tz_offset", "the timezone offset must be a whole number of minutes, such as -240"),
    "timezone offset out of range": ("tz_offset", "the timezone offset must be between -720 and 840 minutes"),
    "unparseable timestamp": ("utc_time", f"timestamps must look like {TIMESTAMP_EXAMPLE!r}"),
    "impossible timestamp": ("utc_time", "that date or time does not exist (or is outside 1678-2261)"),
}
_REASONS = tuple(_ROW_PROBLEMS)
_OK = -1  # reason code of a good row

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# Formats we can name but not read, so the message can say what the file is.
_OTHER_MAGICS = {
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"7z\xbc\xaf\x27\x1c": "7-Zip",
    b"Rar!": "RAR",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PAR1": "a Parquet file",
    b"SQLite format 3\x00": "an SQLite database",
    b"%PDF": "a PDF",
}
_UTF16_32_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_LF, _TAB, _COMMA, _QUOTE = 10, 9, 44, 34
_NOT_C1 = bytes(range(0x80)) + bytes(range(0xA0, 0x100))  # deleting these leaves the C1 control bytes


@dataclass(frozen=True)
class LoadResult:
    """A loaded check-in file: the canonical frame and what was dropped on the way."""

    frame: pd.DataFrame
    skipped: dict[str, int]  # reason -> rows dropped (bad rows when skipping, and "duplicate row")
    format: str  # "raw", "csv" or "tsv"
    compression: str  # "none", "gzip" or "zip"
    encoding: str  # "utf-8" or "latin-1"


@dataclass(frozen=True)
class _Layout:
    """How the text is laid out: delimiter, header and which canonical column each field is."""

    format: str
    sep: int  # byte value of the delimiter
    quoted: bool  # RFC 4180 quotes (comma-separated only)
    columns: tuple[str, ...]  # canonical column of each field, in file order
    labels: dict[str, str]  # canonical column -> the name a person sees for it


@dataclass(frozen=True)
class _Records:
    """Byte spans of the records (data lines) of the text, with their 1-based line numbers."""

    starts: np.ndarray
    ends: np.ndarray  # exclusive, before the record's newline
    stops: np.ndarray  # exclusive, after the record's newline
    lines: np.ndarray
    fields: np.ndarray  # number of fields in each record
    first_sep: np.ndarray  # index into seps of the record's first delimiter
    seps: np.ndarray  # byte positions of every delimiter (outside quotes) in the text


# ---------------------------------------------------------------------------------------------
# Public entry point


def load_checkins(
    source: str | os.PathLike | bytes, *, skip_bad_rows: bool = False, max_bytes: int | None = None
) -> LoadResult:
    """Read a check-in file (a path, or the bytes of an upload) into the canonical frame.

    ``max_bytes`` limits both the file as given and its decompressed content.
    Raises ``DataError`` for anything wrong with the data; see the module docstring.
    """
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"max_bytes must be a positive whole number or None, not {max_bytes!r}")
    data = _read_source(source, max_bytes=max_bytes)
    data, compression = _decompress(data, max_bytes=max_bytes)
    data = _normalise_newlines(data)
    _check_text(data)
    data, encoding = _detect_encoding(data)
    frame, skipped, layout = _parse(data, encoding=encoding, skip_bad_rows=skip_bad_rows)
    return LoadResult(frame=frame, skipped=skipped, format=layout.format, compression=compression, encoding=encoding)


# ---------------------------------------------------------------------------------------------
# Bytes in: source, size, compression, text checks, encoding


def _read_source(source: str | os.PathLike | bytes, *, max_bytes: int | None) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), max_bytes, what="the upload")
        return data
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
    path = Path(source)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise DataError(f"{path} is a folder; choose the check-in file inside it")
        _check_size(size, max_bytes, what=str(path))
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no file at {path}; check the path") from None
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied; check the file's permissions") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None


def _check_size(size: int, max_bytes: int | None, *, what: str) -> None:
    if max_bytes is not None and size > max_bytes:
        raise DataError(
            f"{what} is {_megabytes(size)}, more than the {_megabytes(max_bytes)} limit; "
            f"load a smaller file (for example fewer users)"
        )


def _megabytes(size: int) -> str:
    # MB of 2**20 bytes, as Streamlit counts its upload limit (server.maxUploadSize).
    return f"{size / 2**20:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _check_unpacked(size: int, max_bytes: int | None, *, what: str) -> None:
    # Only max_bytes + 1 bytes are unpacked, so the true size is unknown beyond "more than".
    if max_bytes is not None and size > max_bytes:
        raise DataError(
            f"the decompressed content of {what} is more than the {_megabytes(max_bytes)} limit; "
            f"load a smaller file (for example fewer users)"
        )


def _decompress(data: bytes, *, max_bytes: int | None) -> tuple[bytes, str]:
    if data.startswith(_GZIP_MAGIC):
        return _gunzip(data, max_bytes=max_bytes), "gzip"
    if data.startswith(_ZIP_MAGICS):
        return _unzip(data, max_bytes=max_bytes), "zip"
    for magic, kind in _OTHER_MAGICS.items():
        if data.startswith(magic):
            raise DataError(
                f"the file is {kind}, which cannot be read; use the plain text file, or compress it with gzip or zip"
            )
    return data, "none"


def _gunzip(data: bytes, *, max_bytes: int | None) -> bytes:
    # Read at most one byte past the limit so a small gzip cannot expand without bound.
    limit = -1 if max_bytes is None else max_bytes + 1
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(limit)
    except (OSError, EOFError, zlib.error, struct.error) as error:
        raise DataError(f"the gzip file is damaged or incomplete ({error}); download or compress it again") from None
    _check_unpacked(len(out), max_bytes, what="the gzip file")
    return out


def _unzip(data: bytes, *, max_bytes: int | None) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [info for info in archive.infolist() if _is_data_member(info)]
        if any(info.filename == "[Content_Types].xml" for info in archive.infolist()):
            raise DataError(
                "the file is an Office document (for example an Excel workbook); export the sheet as CSV and load that"
            )
        if len(members) != 1:
            names = ", ".join(info.filename for info in members[:5]) or "nothing"
            raise DataError(
                f"the zip archive must hold exactly one data file, but holds {len(members)} "
                f"({names}); zip only the check-in file"
            )
        _check_size(members[0].file_size, max_bytes, what="the unzipped file")
        limit = -1 if max_bytes is None else max_bytes + 1
        with archive.open(members[0]) as stream:
            out = stream.read(limit)
    except DataError:
        raise
    except RuntimeError as error:  # zipfile's error for encrypted members
        raise DataError(f"cannot open the zip archive ({error}); zip the file without a password") from None
    except NotImplementedError as error:
        raise DataError(
            f"the zip archive uses a compression method that cannot be read ({error}); "
            f"zip it again with ordinary (deflate) compression"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, struct.error, ValueError) as error:
        raise DataError(f"the zip archive is damaged or incomplete ({error}); download or zip it again") from None
    _check_unpacked(len(out), max_bytes, what="the zip archive")
    return out


def _is_data_member(info: zipfile.ZipInfo) -> bool:
    # Folders and macOS Finder metadata are not data files; nor is a member without a name (a damaged archive's,
    # on which zipfile's own is_dir() fails).
    name = info.filename
    base = name.rsplit("/", 1)[-1]
    return bool(name) and not (
        name.endswith("/") or name.startswith("__MACOSX/") or base == ".DS_Store" or base.startswith("._")
    )


def _normalise_newlines(data: bytes) -> bytes:
    # Windows (\r\n) and old Mac (\r) line ends become \n so lines can be counted on \n alone.
    if b"\r" not in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _check_text(data: bytes) -> None:
    if not data.strip():
        raise DataError("the file is empty; choose a file with check-ins")
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise DataError(
                f"the file is {name} text, an encoding that cannot be read; save it as UTF-8 and load it again"
            )
    nul = data.find(b"\x00")
    if nul >= 0:
        if data[:1000:2].count(0) > 100 or data[1:1000:2].count(0) > 100:
            raise DataError(
                "the file looks like UTF-16 text, an encoding that cannot be read; save it as UTF-8 and load it again"
            )
        raise DataError(
            "the file is not text (it holds binary data); choose the check-in text file "
            "(.txt or .csv, optionally gzip- or zip-compressed)",
            line=data.count(b"\n", 0, nul) + 1,
        )
    head = np.frombuffer(data[:8192], dtype=np.uint8)
    controls = np.count_nonzero((head < 32) & (head != _TAB) & (head != _LF)) + np.count_nonzero(head == 127)
    if controls > 0.1 * len(head):
        raise DataError("the file is not text (it is mostly control characters); choose the check-in text file")


def _detect_encoding(data: bytes) -> tuple[bytes, str]:
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        data.decode("utf-8")
        return data, "utf-8"
    except UnicodeDecodeError:
        pass
    # Bytes 0x80-0x9F are control codes in Latin-1: text with them is in some other encoding.
    if data.translate(None, _NOT_C1):
        arr = np.frombuffer(data, dtype=np.uint8)
        at = int(np.flatnonzero((arr >= 0x80) & (arr < 0xA0))[0])
        raise DataError(
            f"the file is neither UTF-8 nor Latin-1 text (byte 0x{arr[at]:02X} is not a character in "
            f"either; it may be Windows-1252 or another encoding); save it as UTF-8 and load it again",
            line=data.count(b"\n", 0, at) + 1,
        )
    return data, "latin-1"


# ---------------------------------------------------------------------------------------------
# Text to table: layout, records, pandas parse


def _parse(data: bytes, *, encoding: str, skip_bad_rows: bool) -> tuple[pd.DataFrame, dict[str, int], _Layout]:
    arr = np.frombuffer(data, dtype=np.uint8)
    layout, records = _layout_and_records(data, arr, encoding=encoding)
    kept, skipped = _drop_bad_shapes(records, layout, skip_bad_rows=skip_bad_rows)
    table, times, time_codes, value_of = _read_values(data, arr, kept, layout=layout, encoding=encoding)
    columns, reasons = _validate(table, times, time_codes)
    bad = reasons != _OK
    if bad.any() and not skip_bad_rows:
        _raise_row_error(value_of, reasons, kept.lines, layout)
    skipped.update(_count_reasons(reasons[bad]))
    if bad.all():
        summary = ", ".join(f"{count:,} {reason}" for reason, count in skipped.items())
        raise DataError(
            f"none of the {len(records.starts):,} rows can be used ({summary}); "
            f"check that this is a Foursquare check-in file",
            line=int(kept.lines[0]),
        )
    # The canonical columns hold all that is needed now: free the byte spans and the parsed table
    # (for a million rows about a quarter of the peak memory) before building the frame.
    del records, kept, table, times, time_codes, value_of
    frame, duplicates = _canonical_frame(columns, keep=~bad)
    if duplicates:
        skipped[DUPLICATE] = duplicates
    return frame, skipped, layout


def _layout_and_records(data: bytes, arr: np.ndarray, *, encoding: str) -> tuple[_Layout, _Records]:
    """The layout, from the first non-empty line, and the data records (the header left out)."""
    first_start, first_stop = _first_line_span(data)
    first_line = data[first_start:first_stop].decode(encoding).rstrip("\n")
    layout = _detect_layout(first_line, line=data.count(b"\n", 0, first_start) + 1)
    if layout.quoted:
        _check_quotes(arr, sep=layout.sep)
    records = _scan_records(arr, sep=layout.sep, quoted=layout.quoted)
    if layout.format != RAW_FORMAT:
        records = _take(records, records.starts >= first_stop)
    if len(records.starts) == 0:
        raise DataError("the file has a header row but no check-ins; choose a file with check-ins")
    return layout, records


def _drop_bad_shapes(records: _Records, layout: _Layout, *, skip_bad_rows: bool) -> tuple[_Records, dict[str, int]]:
    """Records with 8 fields, and the count of the others (which raise unless skipping)."""
    bad = records.fields != len(COLUMNS)
    if bad.any() and not skip_bad_rows:
        _raise_shape_error(records, int(np.flatnonzero(bad)[0]), layout)
    kept = _take(records, ~bad)
    if len(kept.starts) == 0:
        raise DataError(
            f"none of the {len(records.starts):,} rows has the 8 expected columns; {_expected_layout(layout)}",
            line=int(records.lines[0]),
        )
    return kept, ({WRONG_COLUMNS: int(bad.sum())} if bad.any() else {})


def _read_values(
    data: bytes, arr: np.ndarray, kept: _Records, *, layout: _Layout, encoding: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, Callable[[str, int], object]]:
    """The parsed table, the times with their problem codes, and a way to quote a raw value."""
    # Timestamps are parsed straight from the bytes (no str objects) unless quotes may wrap them.
    from_bytes = not (layout.quoted and b'"' in data)
    table = _read_table(_records_buffer(data, arr, kept), layout=layout, encoding=encoding, with_time=not from_bytes)
    if len(table) != len(kept.starts):
        raise RuntimeError(f"internal error: expected {len(kept.starts)} rows, the parser gave {len(table)}")
    if not from_bytes:
        times, codes = parse_utc(table["utc_time"].to_numpy())
        return table, times, codes, lambda column, row: table[column].iloc[row]
    starts, stops = _field_spans(kept, layout.columns.index("utc_time"))
    times, codes = _parse_utc_fields(data, arr, starts, stops, encoding=encoding)

    def value_of(column: str, row: int) -> object:
        # The field as written in the file, so a message quotes "91" rather than the parsed 91.0.
        if column == "utc_time":
            return data[int(starts[row]) : int(stops[row])].decode(encoding)
        lo, hi = (int(span[row]) for span in _field_spans(kept, layout.columns.index(column)))
        return data[lo:hi].decode(encoding)

    return table, times, codes, value_of


def _first_line_span(data: bytes) -> tuple[int, int]:
    """Start and stop (past its newline) of the first non-empty line; empty lines before it are skipped."""
    start = 0
    while True:  # runs once per leading empty line only
        newline = data.find(b"\n", start)
        stop = len(data) if newline < 0 else newline + 1
        if stop - start > 1 or newline < 0:
            return start, stop
        start = stop


def _split_header(line: str, sep: str) -> list[str]:
    return next(csv.reader([line], delimiter=sep)) if sep == "," else line.split(sep)


def _detect_layout(first: str, *, line: int) -> _Layout:
    """Work out delimiter and header from the first non-blank line."""
    if "\t" in first:
        sep = "\t"
    elif "," in first:
        sep = ","
    else:
        found = next((name for char, name in ((";", "semicolons"), ("|", "vertical bars")) if char in first), None)
        how = f"it seems to be separated by {found}" if found else "found 1 column"
        raise DataError(
            f"the first line has no tabs or commas ({how}); expected the raw TSMC2014 file "
            f"(8 tab-separated columns) or a CSV with the header {','.join(CSV_HEADER)}",
            line=line,
        )
    fields = [field.strip().strip('"').strip() for field in _split_header(first, sep)]
    known = {name.lower(): column for name, column in zip(CSV_HEADER, COLUMNS)}
    # Three known names make a header (even one with a column missing); data rows never have that.
    if sum(field.lower() in known for field in fields) < 3:
        if sep == ",":
            raise DataError(
                f"the file is comma-separated but has no header row; make the first line "
                f"{','.join(CSV_HEADER)} (or use the raw tab-separated TSMC2014 file)",
                line=line,
            )
        return _Layout(
            format=RAW_FORMAT, sep=_TAB, quoted=False, columns=COLUMNS, labels={column: column for column in COLUMNS}
        )
    columns = []
    for field in fields:
        column = known.get(field.lower())
        if column is None:
            raise DataError(
                f"unexpected column {field!r} in the header; the columns must be {', '.join(CSV_HEADER)}",
                line=line,
                column=field,
            )
        if column in columns:
            raise DataError(f"column {field!r} appears twice in the header", line=line, column=field)
        columns.append(column)
    missing = [name for name, column in zip(CSV_HEADER, COLUMNS) if column not in columns]
    if missing:
        raise DataError(
            f"the header lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"the columns must be {', '.join(CSV_HEADER)}",
            line=line,
            column=missing[0],
        )
    labels = {column: field for field, column in zip(fields, columns)}
    return _Layout(
        format=CSV_FORMAT if sep == "," else TSV_FORMAT,
        sep=ord(sep),
        quoted=sep == ",",
        columns=tuple(columns),
        labels=labels,
    )


def _expected_layout(layout: _Layout) -> str:
    if layout.format == RAW_FORMAT:
        return "the raw TSMC2014 file has 8 tab-separated columns: " + ", ".join(COLUMNS)
    sep = "comma" if layout.sep == _COMMA else "tab"
    return f"every row needs 8 {sep}-separated values, one per header column"


def _check_quotes(arr: np.ndarray, *, sep: int) -> None:
    """Quotes must enclose whole fields (RFC 4180, "" inside for a quote) so records can be counted."""
    quotes = np.flatnonzero(arr == _QUOTE)
    if len(quotes) == 0:
        return
    if len(quotes) % 2:
        _raise_quote_error(arr, int(quotes[-1]), "a quote is never closed")
    before = np.where(quotes > 0, arr[np.maximum(quotes - 1, 0)], _LF)
    after = np.where(quotes < len(arr) - 1, arr[np.minimum(quotes + 1, len(arr) - 1)], _LF)
    index = np.arange(len(quotes))
    adjacent_prev = np.r_[False, np.diff(quotes) == 1]
    adjacent_next = np.r_[np.diff(quotes) == 1, False]
    opening_ok = (before == sep) | (before == _LF) | adjacent_prev
    closing_ok = (after == sep) | (after == _LF) | adjacent_next
    bad = np.where(index % 2 == 0, ~opening_ok, ~closing_ok)
    if bad.any():
        _raise_quote_error(arr, int(quotes[np.flatnonzero(bad)[0]]), "a double quote in the middle of a field")


def _raise_quote_error(arr: np.ndarray, at: int, what: str) -> None:
    line = int(np.count_nonzero(arr[:at] == _LF)) + 1
    raise DataError(
        f'{what}; in a CSV file quotes must enclose a whole field, written "" inside it; '
        f"fix the quoting (or remove the quote)",
        line=line,
    )


def _scan_records(arr: np.ndarray, *, sep: int, quoted: bool) -> _Records:
    """Find every non-empty record and count its fields, vectorised over the bytes."""
    newlines = np.flatnonzero(arr == _LF)
    seps = np.flatnonzero(arr == sep)
    ends = newlines
    if quoted:
        quotes = np.flatnonzero(arr == _QUOTE)
        if len(quotes):
            # A newline or delimiter inside quotes (after an odd number of quotes) is data.
            ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
            seps = seps[np.searchsorted(quotes, seps) % 2 == 0]
    if len(arr) and arr[-1] != _LF:
        ends = np.append(ends, len(arr))  # a last line without a newline
    stops = np.minimum(ends + 1, len(arr))
    starts = np.r_[0, stops[:-1]].astype(np.int64)
    sep_index = np.searchsorted(seps, ends)
    fields = np.diff(sep_index, prepend=0) + 1
    lines = np.arange(1, len(ends) + 1) if ends is newlines else np.searchsorted(newlines, starts) + 1
    keep = ends > starts  # empty lines are ignored
    return _Records(
        starts=starts[keep],
        ends=ends[keep],
        stops=stops[keep],
        lines=lines[keep],
        fields=fields[keep],
        first_sep=(sep_index - fields + 1)[keep],
        seps=seps,
    )


def _take(records: _Records, keep: np.ndarray) -> _Records:
    return _Records(
        starts=records.starts[keep],
        ends=records.ends[keep],
        stops=records.stops[keep],
        lines=records.lines[keep],
        fields=records.fields[keep],
        first_sep=records.first_sep[keep],
        seps=records.seps,
    )


def _field_spans(records: _Records, position: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte start and stop of field ``position`` (0-based) in records that have all 8 fields."""
    seps = records.seps
    start = records.starts if position == 0 else seps[records.first_sep + position - 1] + 1
    stop = records.ends if position == len(COLUMNS) - 1 else seps[records.first_sep + position]
    return start, stop


def _records_buffer(data: bytes, arr: np.ndarray, records: _Records) -> bytes:
    """The bytes of just these records, so the parser sees exactly one row per kept record."""
    if np.all(records.starts[1:] == records.stops[:-1]):  # one contiguous run: no copy needed
        start, stop = int(records.starts[0]), int(records.stops[-1])
        out = data if (start, stop) == (0, len(data)) else data[start:stop]
    else:
        delta = np.zeros(len(arr) + 1, dtype=np.int8)
        delta[records.starts] += 1  # starts are distinct, and so are stops
        delta[records.stops] -= 1
        out = arr[np.cumsum(delta[:-1], dtype=np.int8) > 0].tobytes()
    return out if out.endswith(b"\n") else out + b"\n"


def _read_table(buffer: bytes, *, layout: _Layout, encoding: str, with_time: bool) -> pd.DataFrame:
    """Parse with pandas' C parser: strings as categoricals, numbers as float64, times as str."""
    numeric = ("latitude", "longitude", "tz_offset")
    dtypes = {column: "category" for column in STRING_COLUMNS}
    dtypes.update({column: "float64" for column in numeric}, utc_time=object)
    usecols = [column for column in layout.columns if with_time or column != "utc_time"]
    options = dict(
        sep=chr(layout.sep),
        header=None,
        names=list(layout.columns),
        usecols=usecols,
        engine="c",
        encoding=encoding,
        keep_default_na=False,
        na_values={column: [""] for column in numeric},
        skip_blank_lines=False,
        quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE,
        doublequote=True,
    )
    try:
        try:
            return pd.read_csv(io.BytesIO(buffer), dtype=dtypes, **options)
        except pd.errors.ParserError:
            raise
        except ValueError:
            # A value pandas cannot read as a number: read those columns as text to find it.
            dtypes.update({column: object for column in numeric})
            return pd.read_csv(io.BytesIO(buffer), dtype=dtypes, **options)
    except pd.errors.ParserError as error:
        raise DataError(
            f"the file cannot be split into rows and columns ({error}); {_expected_layout(layout)}"
        ) from None


def _to_float(values: pd.Series) -> np.ndarray:
    """Numbers as float64, NaN where not a number (text columns come from the slow path)."""
    if values.dtype == object:
        values = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return values.to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Values: validation and the canonical frame


def _validate(table: pd.DataFrame, times: np.ndarray, time_codes: np.ndarray) -> tuple[dict, np.ndarray]:
    """Canonical column arrays and each row's first problem (index into _REASONS, or _OK)."""
    n = len(table)
    reasons = np.full(n, _OK, dtype=np.int8)

    def flag(reason: str, mask: np.ndarray) -> None:
        # Keep the first problem found for a row: checks run in column order.
        reasons[mask & (reasons == _OK)] = _REASONS.index(reason)

    columns: dict[str, np.ndarray] = {}
    for column, reason in (
        ("user", "missing user id"),
        ("venue", "missing venue id"),
        ("category_id", "missing category id"),
        ("category", "missing category"),
    ):
        codes, uniques = _stripped_codes(table[column])
        empty = np.flatnonzero(uniques == "")
        flag(reason, codes == (empty[0] if len(empty) else -1))
        columns[column] = (codes, uniques)  # type: ignore[assignment]
    for column, limit in (("latitude", 90.0), ("longitude", 180.0)):
        values = _to_float(table[column])
        finite = np.isfinite(values)
        flag(f"non-numeric {column}", ~finite)
        flag(f"{column} out of range", finite & (np.abs(values) > limit))
        columns[column] = values
    offsets = _to_float(table["tz_offset"])
    whole = np.isfinite(offsets) & (offsets == np.round(offsets))
    flag("non-integer timezone offset", ~whole)
    flag("timezone offset out of range", whole & ((offsets < -720) | (offsets > 840)))
    columns["tz_offset"] = np.where(whole, offsets, 0).astype(np.int64)
    flag("unparseable timestamp", time_codes == 1)
    flag("impossible timestamp", time_codes == 2)
    columns["utc_time"] = times
    return columns, reasons


def _stripped_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and distinct stripped strings; stripping only the distinct values is cheap."""
    categorical = values.astype("category") if not isinstance(values.dtype, pd.CategoricalDtype) else values
    raw = categorical.cat.categories.tolist() + [""]  # code -1 (a missing value) indexes the last
    stripped = np.array([str(value).strip() for value in raw], dtype=object)  # once per distinct value
    remap, uniques = pd.factorize(stripped)
    codes = categorical.cat.codes.to_numpy()
    return remap[codes].astype(np.int64), np.asarray(uniques, dtype=object)


def _canonical_frame(columns: dict, *, keep: np.ndarray) -> tuple[pd.DataFrame, int]:
    """The frame of the kept rows less exact duplicates (the first is kept); also the duplicate count."""
    strings = {column: (columns[column][0][keep], columns[column][1]) for column in STRING_COLUMNS}
    values = {column: columns[column][keep] for column in COLUMNS[4:]}
    unique = np.ones(len(values["utc_time"]), dtype=bool)
    # Only rows sharing user and time can be duplicates; comparing those alone is much faster.
    user_time = values["utc_time"].view(np.int64) ^ (strings["user"][0] * np.int64(0x9E3779B97F4A7C15 - (1 << 64)))
    candidates = np.flatnonzero(pd.Series(user_time).duplicated(keep=False).to_numpy())
    if len(candidates):
        key = pd.DataFrame(
            {
                **{column: codes[candidates] for column, (codes, _) in strings.items()},
                **{column: array[candidates] for column, array in values.items()},
            }
        )
        unique[candidates[key.duplicated(keep="first").to_numpy()]] = False
    duplicates = int(len(unique) - unique.sum())
    frame = pd.DataFrame(
        {
            # Indexing the distinct strings shares one str object per value (memory for big files).
            **{column: uniques[codes[unique]] for column, (codes, uniques) in strings.items()},
            **{column: array[unique] for column, array in values.items()},
        },
        columns=list(COLUMNS),
    )
    return frame, duplicates


# ---------------------------------------------------------------------------------------------
# Timestamps


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WIDTH = 30  # len("Tue Apr 03 18:00:09 +0000 2012")
_DIGITS = (8, 9, 11, 12, 14, 15, 17, 18, 21, 22, 23, 24, 26, 27, 28, 29)
_SPACES = (3, 7, 10, 19, 25)
_CHUNK = 1 << 18  # rows per block, to bound the temporary byte matrix of a big file


def parse_utc(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``Tue Apr 03 18:00:09 +0000 2012`` strings to naive-UTC datetime64[ns].

    Returns the times (NaT where bad) and a code per value: 0 good, 1 unparseable,
    2 impossible (a date or time that does not exist). Fixed-width strings are parsed with
    numpy on their bytes; the rest go through ``pd.to_datetime`` with the same format.
    """
    values = np.asarray(values, dtype=object)
    times = np.empty(len(values), dtype="datetime64[ns]")
    codes = np.empty(len(values), dtype=np.int8)
    for start in range(0, len(values), _CHUNK):
        block = slice(start, start + _CHUNK)
        times[block], codes[block] = _parse_matrix(*_strings_matrix(values[block]))
    odd = np.flatnonzero(codes == 1)
    if len(odd):
        times[odd], codes[odd] = _parse_flexible(values[odd])
    return times, codes


def _parse_utc_fields(
    data: bytes, arr: np.ndarray, starts: np.ndarray, stops: np.ndarray, *, encoding: str
) -> tuple[np.ndarray, np.ndarray]:
    """parse_utc for fields given as byte spans of the text, without making str objects."""
    times = np.empty(len(starts), dtype="datetime64[ns]")
    codes = np.empty(len(starts), dtype=np.int8)
    if len(arr) < _WIDTH:
        arr = np.zeros(_WIDTH, dtype=np.uint8)  # too short to hold any timestamp: every row is odd
    windows = np.lib.stride_tricks.sliding_window_view(arr, _WIDTH)  # a view; rows copied on indexing
    for start in range(0, len(starts), _CHUNK):
        block = slice(start, start + _CHUNK)
        fits = stops[block] - starts[block] == _WIDTH
        first = np.where(fits, starts[block], 0)  # rows of another width read a dummy span
        times[block], codes[block] = _parse_matrix(windows[first], fits)
    odd = np.flatnonzero(codes == 1)
    if len(odd):
        text = np.array([data[int(starts[i]) : int(stops[i])].decode(encoding) for i in odd], dtype=object)
        times[odd], codes[odd] = _parse_flexible(text)
    return times, codes


def _strings_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each string's first 30 bytes as a row of a uint8 matrix, and whether it is exactly 30 long."""
    try:
        matrix = values.astype(f"S{_WIDTH + 1}").view(np.uint8).reshape(len(values), _WIDTH + 1)
    except (UnicodeEncodeError, ValueError, TypeError):
        wide = values.astype(f"U{_WIDTH + 1}").view(np.uint32).reshape(len(values), _WIDTH + 1)
        matrix = np.where(wide < 128, wide, 255).astype(np.uint8)  # non-ASCII never matches
    fits = (matrix[:, _WIDTH - 1] != 0) & (matrix[:, _WIDTH] == 0)
    return matrix[:, :_WIDTH], fits


def _parse_matrix(matrix: np.ndarray, fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-width parser: one row of 30 ASCII bytes per timestamp."""
    shape_ok = fits & np.all(matrix[:, list(_SPACES)] == 32, axis=1)
    shape_ok &= (matrix[:, 13] == 58) & (matrix[:, 16] == 58) & ((matrix[:, 20] == 43) | (matrix[:, 20] == 45))
    digits = matrix[:, list(_DIGITS)].astype(np.int32) - 48
    shape_ok &= np.all((digits >= 0) & (digits <= 9), axis=1)
    month = _lookup(matrix[:, 4:7], _MONTHS) + 1
    shape_ok &= (month > 0) & (_lookup(matrix[:, 0:3], _WEEKDAYS) >= 0)

    d = dict(zip(_DIGITS, digits.T))
    day, hour, minute, second = (d[i] * 10 + d[i + 1] for i in (8, 11, 14, 17))
    year = d[26] * 1000 + d[27] * 100 + d[28] * 10 + d[29]
    offset_minutes = d[23] * 10 + d[24]
    offset = np.where(matrix[:, 20] == 45, -1, 1) * ((d[21] * 10 + d[22]) * 60 + offset_minutes)
    months = np.where(shape_ok, (year - 1970) * 12 + month - 1, 0).astype(np.int64)
    first_day = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    month_days = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - first_day
    possible = (
        (day >= 1)
        & (day <= month_days)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
        & (offset_minutes <= 59)
        & (np.abs(offset) <= 14 * 60)
        & (year >= 1678)
        & (year <= 2261)
    )
    seconds = (first_day + day - 1) * 86400 + hour * 3600 + minute * 60 + second - offset * 60
    good = shape_ok & possible
    times = np.where(good, seconds * 1_000_000_000, np.iinfo(np.int64).min).view("datetime64[ns]")
    codes = np.where(good, 0, np.where(shape_ok, 2, 1)).astype(np.int8)
    return times, codes


def format_utc(times: np.ndarray | pd.Series) -> np.ndarray:
    """Naive-UTC datetimes as ``Tue Apr 03 18:00:09 +0000 2012`` strings (the inverse of parse_utc)."""
    stamps = np.asarray(times, dtype="datetime64[s]")
    if np.isnat(stamps).any():
        raise ValueError("cannot format a missing time (NaT)")
    seconds = stamps.astype(np.int64)
    days = seconds // 86400
    clock = seconds - days * 86400
    month_start = stamps.astype("datetime64[M]")
    year = month_start.astype("datetime64[Y]").astype(np.int64) + 1970
    if ((year < 1000) | (year > 9999)).any():
        raise ValueError("years must have four digits")
    matrix = np.full((len(stamps), _WIDTH), ord(" "), dtype=np.uint8)
    matrix[:, 0:3] = _letters(_WEEKDAYS)[(days + 3) % 7]  # 1970-01-01 was a Thursday
    matrix[:, 4:7] = _letters(_MONTHS)[month_start.astype(np.int64) % 12]
    for column, value, width in (
        (8, (stamps.astype("datetime64[D]") - month_start).astype(np.int64) + 1, 2),
        (11, clock // 3600, 2),
        (14, clock // 60 % 60, 2),
        (17, clock % 60, 2),
        (26, year, 4),
    ):
        for place in range(width):
            matrix[:, column + place] = 48 + value // 10 ** (width - 1 - place) % 10
    matrix[:, [13, 16]] = ord(":")
    matrix[:, 20:25] = np.frombuffer(b"+0000", dtype=np.uint8)
    return matrix.view(f"S{_WIDTH}").ravel().astype(f"U{_WIDTH}").astype(object)


def _letters(names: tuple[str, ...]) -> np.ndarray:
    return np.frombuffer("".join(names).encode("ascii"), dtype=np.uint8).reshape(len(names), 3)


def _lookup(letters: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Index of each 3-letter byte triple in names, or -1."""
    letters = letters.astype(np.int64)
    keys = letters[:, 0] << 16 | letters[:, 1] << 8 | letters[:, 2]
    table = np.array([ord(a) << 16 | ord(b) << 8 | ord(c) for a, b, c in names], dtype=np.int64)
    order = np.argsort(table)
    pos = np.clip(np.searchsorted(table[order], keys), 0, len(table) - 1)
    return np.where(table[order][pos] == keys, order[pos], -1)


def _parse_flexible(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variants the fixed-width parser rejects (padding, one-digit days, other letter case)."""
    text = pd.Series(values, dtype=object).astype(str).str.strip()
    parsed = pd.to_datetime(text, format=TIMESTAMP_FORMAT, errors="coerce", utc=True)
    times = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    return times, np.where(np.isnat(times), 1, 0).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Reporting problems


def _count_reasons(codes: np.ndarray) -> dict[str, int]:
    counts = np.bincount(codes.astype(np.int64), minlength=len(_REASONS)) if len(codes) else []
    return {_REASONS[i]: int(count) for i, count in enumerate(counts) if count}


def _raise_shape_error(records: _Records, index: int, layout: _Layout) -> None:
    found = int(records.fields[index])
    sep_name = "tab" if layout.sep == _TAB else "comma"
    hint = ""
    if found == 1:
        hint = f" (the line has no {sep_name}s; is it separated by something else?)"
    raise DataError(
        f"this line has {found} {sep_name}-separated column{'s' if found != 1 else ''} but "
        f"{len(COLUMNS)} are expected{hint}; {_expected_layout(layout)}. {SKIP_HINT}",
        line=int(records.lines[index]),
    )


def _raise_row_error(
    value_of: Callable[[str, int], object], reasons: np.ndarray, lines: np.ndarray, layout: _Layout
) -> None:
    index = int(np.flatnonzero(reasons != _OK)[0])
    reason = _REASONS[reasons[index]]
    column, rule = _ROW_PROBLEMS[reason]
    value = value_of(column, index)
    if reason.startswith("missing"):
        shown = ""
    elif isinstance(value, float) and np.isnan(value) or str(value).strip() == "":
        shown = " (empty)"
    else:
        shown = f" {str(value)[:60]!r}"
    position = layout.columns.index(column) + 1
    raise DataError(
        f"{reason}{shown} in column {position}; {rule}. {SKIP_HINT}",
        line=int(lines[index]),
        column=layout.labels[column],
    )
