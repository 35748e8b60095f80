"""Property-based tests of fedlab.data.loader (hypothesis), beyond the two in test_loader.py.

test_loader.py already has: random rows written as a raw file round-trip, and random byte-level
corruptions of five small files give a DataError or a valid frame. Here:

- well-formed files in every layout the loader reads (raw, CSV with the header in any column order and
  any quoting, tab-separated with a header), in UTF-8 (with or without a BOM) or Latin-1, with Unix or
  Windows line ends, blank lines, padded text, timestamps with any UTC offset, and plain, gzip or zip
  compression, all round-trip;
- one field of one row replaced by random text: the file loads, or the error names exactly that line
  and column;
- known bad rows mixed into good ones: without skipping, the error names the first bad line; with
  skipping, exactly the good rows remain and the skipped rows are counted by reason;
- any bytes at all, and any text at all: a frame that keeps the loader's promises, or a DataError;
- the size limit holds for plain and compressed files;
- parse_utc never fails, and inverts format_utc.
"""

from __future__ import annotations

import csv
import gzip
import io
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from fedlab.data.loader import COLUMNS, CSV_HEADER, format_utc, load_checkins, parse_utc
from fedlab.errors import DataError
from tests.helpers import compressed

DTYPES = {
    "user": object,
    "venue": object,
    "category_id": object,
    "category": object,
    "latitude": np.float64,
    "longitude": np.float64,
    "tz_offset": np.int64,
    "utc_time": np.dtype("<M8[ns]"),
}


def SETTINGS(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


HEADER_NAMES = dict(zip(COLUMNS, CSV_HEADER))
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()


# ----- strategies --------------------------------------------------------------------------------------------


def _text(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # Text as a person might type it: no control characters (tabs and line breaks are the format's).
    return st.text(alphabet, min_size=1, max_size=10).map(str.strip).filter(bool)


UNICODE = st.characters(exclude_categories=("Cc", "Cs"))
LATIN1 = st.characters(codec="latin-1", exclude_categories=("Cc",))
# Values that other readers turn into missing values or numbers; here they stay text.
TRICKY = st.sampled_from(["NA", "nan", "None", "#N/A", "null", "0", "-1", "1e5", "TRUE", "'", '"q"', "a,b"])


@st.composite
def checkins(draw, alphabet=UNICODE) -> list[tuple]:
    """Rows of canonical values: (user, venue, category id, category, lat, lon, tz minutes, utc time)."""
    text = st.one_of(_text(alphabet), TRICKY)
    users = draw(st.lists(text, min_size=1, max_size=4))
    row = st.tuples(
        st.sampled_from(users),
        text,
        text,
        text,
        st.floats(-90, 90, allow_nan=False),
        st.floats(-180, 180, allow_nan=False),
        st.integers(-720, 840),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)),
    )
    rows = draw(st.lists(row, min_size=1, max_size=15))
    # Now and then the same check-in twice: dropped and counted, never an error.
    if draw(st.booleans()):
        rows.append(rows[draw(st.integers(0, len(rows) - 1))])
    return [(*r[:7], r[7].replace(microsecond=0)) for r in rows]


@st.composite
def timestamps(draw, utc: datetime) -> str:
    """`utc` written in the TSMC2014 form with some UTC offset (the loader converts it back to UTC)."""
    offset = draw(st.sampled_from([0, 0, 60, -240, 330, 345, -570, 840, -720]))
    local = utc + timedelta(minutes=offset)
    sign = "-" if offset < 0 else "+"
    day = f"{local.day:02d}" if draw(st.booleans()) or local.day >= 10 else str(local.day)  # "Apr 3" is read too
    return (
        f"{DAYS[local.weekday()]} {MONTHS[local.month - 1]} {day} {local:%H:%M:%S} "
        f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d} {local.year}"
    )


def expected_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in COLUMNS[:4]:
        frame[column] = frame[column].map(str.strip)
    frame["utc_time"] = pd.to_datetime(frame["utc_time"]).astype("datetime64[ns]")
    return frame.drop_duplicates().reset_index(drop=True)


def assert_frame_promises(frame: pd.DataFrame) -> None:
    """What every loaded frame keeps, whatever the file."""
    assert tuple(frame.columns) == COLUMNS and dict(frame.dtypes) == DTYPES
    assert len(frame) >= 1
    assert frame["latitude"].abs().le(90).all() and frame["longitude"].abs().le(180).all()
    assert frame["tz_offset"].between(-720, 840).all() and frame["utc_time"].notna().all()
    for column in COLUMNS[:4]:
        assert all(isinstance(v, str) and v and v == v.strip() for v in frame[column])
    assert not frame.duplicated().any()


# ----- writing files ------------------------------------------------------------------------------------------


def write_file(draw, rows: list[tuple], *, layout: str, encoding: str) -> bytes:
    """The rows as one file in `layout` ("raw", "csv" or "tsv"), with random but legal presentation."""
    order = list(COLUMNS) if layout == "raw" else draw(st.permutations(list(COLUMNS)))
    pad = draw(st.booleans())
    fields = []
    for user, venue, cat_id, category, lat, lon, tz, utc in rows:
        values = {
            "user": user,
            "venue": venue,
            "category_id": cat_id,
            "category": category,
            "latitude": repr(lat),
            "longitude": repr(lon),
            "tz_offset": str(tz),
            "utc_time": draw(timestamps(utc)),
        }
        if pad:  # surrounding spaces in text fields are not part of the value
            values.update({c: f" {values[c]}  " for c in COLUMNS[:4]})
        fields.append([values[c] for c in order])
    buffer = io.StringIO()
    if layout == "csv":
        quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
        writer = csv.writer(buffer, quoting=quoting, lineterminator="\n")
        writer.writerow([HEADER_NAMES[c] for c in order])
        writer.writerows(fields)
        lines = buffer.getvalue().split("\n")[:-1]
    else:
        header = ["\t".join(HEADER_NAMES[c] for c in order)] if layout == "tsv" else []
        lines = header + ["\t".join(f) for f in fields]
    blank = draw(st.lists(st.integers(0, len(lines)), max_size=3))
    for at in sorted(blank, reverse=True):
        lines.insert(at, "")
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    data = text.encode(encoding)
    if encoding == "utf-8" and draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


def compress(draw, data: bytes) -> bytes:
    return compressed(data, draw(st.sampled_from(["none", "gzip", "zip"])))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ----- properties -------------------------------------------------------------------------------------------


@SETTINGS(60)
@given(data=st.data(), layout=st.sampled_from(["raw", "csv", "tsv"]), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_well_formed_files_in_every_layout_round_trip(data, layout, encoding):
    rows = data.draw(checkins(UNICODE if encoding == "utf-8" else LATIN1))
    raw = write_file(data.draw, rows, layout=layout, encoding=encoding)
    if encoding == "latin-1":
        # A Latin-1 file that is also valid UTF-8 (e.g. "Ã©") is read as UTF-8, by design.
        assume(raw.isascii() or not _is_utf8(raw))
    result = load_checkins(compress(data.draw, raw))
    expected = expected_frame(rows)
    pd.testing.assert_frame_equal(result.frame, expected, check_exact=False, rtol=1e-12, atol=1e-12)
    assert result.skipped == ({"duplicate row": len(rows) - len(expected)} if len(rows) > len(expected) else {})
    assert result.format == layout
    assert result.encoding == ("latin-1" if encoding == "latin-1" and not raw.isascii() else "utf-8")


GOOD = [
    ("u1", "v1", "c1", "Bar", 40.7, -73.9, -240, datetime(2012, 4, 3, 18, 0, 9)),
    ("u1", "v2", "c2", "Café", 40.75, -73.95, -240, datetime(2012, 4, 4, 9, 30)),
    ("u2", "v3", "c1", "Office", 40.8, -74.0, -300, datetime(2012, 4, 5, 12, 0)),
]


def _raw_lines(rows) -> list[str]:
    times = format_utc(np.array([r[7] for r in rows], dtype="datetime64[s]"))
    return ["\t".join([*r[:4], repr(r[4]), repr(r[5]), str(r[6]), t]) for r, t in zip(rows, times)]


@SETTINGS(100)
@given(
    line=st.integers(0, len(GOOD) - 1),
    column=st.integers(0, len(COLUMNS) - 1),
    value=st.one_of(
        st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=34),
        st.sampled_from(
            [
                "",
                " ",
                "-",
                "1e400",
                "nan",
                "inf",
                "91",
                "-180.0001",
                "841",
                "0x10",
                "Fri Feb 29 10:00:00 +0000 2013",
                "Sun Jan 00 00:00:00 +0000 2012",
                "Tue Apr 03 18:00:09 +1500 2012",
                "Tue Apr 03 18:00:60 +0000 2012",
            ]
        ),
    ),
)
@example(line=1, column=4, value="north")
@example(line=2, column=7, value="Thu Feb 30 18:00:09 +0000 2012")
def test_one_bad_field_is_reported_at_its_line_and_column(line, column, value):
    lines = _raw_lines(GOOD)
    fields = lines[line].split("\t")
    fields[column] = value
    lines[line] = "\t".join(fields)
    try:
        result = load_checkins("\n".join(lines).encode("utf-8"))
    except DataError as error:
        assert (error.line, error.column) == (line + 1, COLUMNS[column]), str(error)
        assert "\n" not in str(error) and f"line {line + 1}" in str(error)
        return
    assert_frame_promises(result.frame)
    assert len(result.frame) + result.skipped.get("duplicate row", 0) == len(GOOD)


# A bad version of a good row, and the reason it is counted under when skipping.
BAD_ROWS = {
    "wrong number of columns": lambda f: f[:6],
    "missing user id": lambda f: ["  ", *f[1:]],
    "missing category": lambda f: [*f[:3], "", *f[4:]],
    "non-numeric latitude": lambda f: [*f[:4], "forty", *f[5:]],
    "latitude out of range": lambda f: [*f[:4], "-90.5", *f[5:]],
    "longitude out of range": lambda f: [*f[:5], "181", *f[6:]],
    "non-integer timezone offset": lambda f: [*f[:6], "30.5", f[7]],
    "timezone offset out of range": lambda f: [*f[:6], "-721", f[7]],
    "unparseable timestamp": lambda f: [*f[:7], "2012-04-03T18:00:09Z"],
    "impossible timestamp": lambda f: [*f[:7], "Mon Apr 31 10:00:00 +0000 2012"],
}


@SETTINGS(50)
@given(
    rows=checkins(LATIN1),
    bad=st.lists(st.tuples(st.sampled_from(sorted(BAD_ROWS)), st.integers(0, 10**6)), min_size=1, max_size=5),
)
def test_bad_rows_are_reported_first_or_skipped_and_counted(rows, bad):
    good = [line.split("\t") for line in _raw_lines(rows)]
    lines, reasons = list(good), [None] * len(good)
    for reason, where in bad:  # a bad copy of some good row, somewhere in the file
        at = where % (len(lines) + 1)
        lines.insert(at, BAD_ROWS[reason](list(good[where % len(good)])))
        reasons.insert(at, reason)
    data = ("\n".join("\t".join(f) for f in lines) + "\n").encode("latin-1")
    assume(not _is_utf8(data) or data.isascii())

    with pytest.raises(DataError) as caught:
        load_checkins(data)
    # Rows with the wrong number of columns are found before bad values.
    shape = [i for i, r in enumerate(reasons) if r == "wrong number of columns"]
    first = shape[0] if shape else next(i for i, r in enumerate(reasons) if r is not None)
    assert caught.value.line == first + 1

    result = load_checkins(data, skip_bad_rows=True)
    pd.testing.assert_frame_equal(result.frame, expected_frame(rows), check_exact=False, rtol=1e-12, atol=1e-12)
    counted = {reason: reasons.count(reason) for reason in set(reasons) - {None}}
    duplicates = len(rows) - len(expected_frame(rows))
    assert result.skipped == {**counted, **({"duplicate row": duplicates} if duplicates else {})}


@SETTINGS(150)
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.text(st.sampled_from('\t\n\r,;" 0123456789.-+:abcAprTue\x00é\ufeff'), max_size=300).map(
            lambda t: t.encode("utf-8")
        ),
        st.lists(st.text(max_size=40), max_size=12).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
    ),
    skip=st.booleans(),
)
def test_any_bytes_give_a_frame_or_a_data_error(data, skip):
    try:
        result = load_checkins(data, skip_bad_rows=skip)
    except DataError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert_frame_promises(result.frame)


@SETTINGS(40)
@given(rows=checkins(LATIN1), slack=st.integers(-50, 50), kind=st.sampled_from(["none", "gzip"]))
def test_the_size_limit_holds_for_plain_and_compressed_files(rows, slack, kind):
    plain = ("\n".join(_raw_lines(rows)) + "\n").encode("utf-8")
    data = gzip.compress(plain, mtime=0) if kind == "gzip" else plain
    limit = max(len(plain) + slack, 1)
    if len(data) <= limit and len(plain) <= limit:
        assert len(load_checkins(data, max_bytes=limit).frame) >= 1
    else:
        with pytest.raises(DataError, match="limit"):
            load_checkins(data, max_bytes=limit)


@SETTINGS(60)
@given(
    times=st.lists(st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31)), max_size=20),
    junk=st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=35), max_size=10),
)
def test_parse_utc_inverts_format_utc_and_never_fails(times, junk):
    stamps = np.array([t.replace(microsecond=0) for t in times], dtype="datetime64[s]").astype("datetime64[ns]")
    parsed, codes = parse_utc(format_utc(stamps))
    assert (codes == 0).all() and (parsed == stamps).all()
    parsed, codes = parse_utc(np.array(junk, dtype=object))
    assert set(codes.tolist()) <= {0, 1, 2}
    assert (np.isnat(parsed) == (codes != 0)).all()
