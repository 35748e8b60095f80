"""fedlab.data.loader: formats, compression, encodings, errors with line/column, skipping, duplicates."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlab.data.loader import COLUMNS, CSV_HEADER, LoadResult, format_utc, load_checkins, parse_utc
from fedlab.data.synthetic import write_raw
from fedlab.errors import DataError
from tests.helpers import compressed

REAL_DIR = Path(__file__).resolve().parents[2] / "shared/data/foursquare"
HEADER = ",".join(CSV_HEADER)
TIME = "Tue Apr 03 18:00:09 +0000 2012"
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


def row(
    user="1", venue="v1", cat_id="c1", category="Bar", lat="40.7", lon="-73.9", tz="-240", time=TIME, sep="\t"
) -> str:
    return sep.join([user, venue, cat_id, category, lat, lon, tz, time])


def good_rows(sep="\t") -> list[str]:
    return [
        row(sep=sep),
        row(user="2", venue="v2", category="Café", time="Wed Apr 04 09:30:00 +0000 2012", sep=sep),
        row(user="1", venue="v3", category="Office", lat="40.75", time="Thu Apr 05 12:00:00 +0000 2012", sep=sep),
    ]


def write(tmp_path: Path, text: str | bytes, *, encoding="latin-1", name="checkins.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def raw_file(tmp_path: Path, lines: list[str], **kwargs) -> Path:
    return write(tmp_path, "\n".join(lines) + "\n", **kwargs)


def load_error(source, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        load_checkins(source, **kwargs)
    return caught.value


# --- formats, encodings, compression ---------------------------------------------------------


def test_raw_latin1_file(tmp_path):
    result = load_checkins(raw_file(tmp_path, good_rows()))
    assert (result.format, result.compression, result.encoding) == ("raw", "none", "latin-1")
    assert result.frame["category"].tolist() == ["Bar", "Café", "Office"]
    assert result.skipped == {}


def test_frame_has_canonical_columns_and_dtypes(tmp_path):
    frame = load_checkins(raw_file(tmp_path, good_rows())).frame
    assert tuple(frame.columns) == COLUMNS
    assert dict(frame.dtypes) == DTYPES
    assert all(isinstance(value, str) for value in frame["user"])


def test_values_are_parsed(tmp_path):
    frame = load_checkins(raw_file(tmp_path, good_rows())).frame
    first = frame.iloc[0]
    assert (first.user, first.venue, first.category_id) == ("1", "v1", "c1")
    assert (first.latitude, first.longitude, first.tz_offset) == (40.7, -73.9, -240)
    assert first.utc_time == pd.Timestamp("2012-04-03 18:00:09")


def test_file_order_is_kept(tmp_path):
    lines = good_rows()[::-1]
    frame = load_checkins(raw_file(tmp_path, lines)).frame
    assert frame["venue"].tolist() == ["v3", "v2", "v1"]


def test_header_csv_utf8(tmp_path):
    result = load_checkins(write(tmp_path, "\n".join([HEADER, *good_rows(",")]) + "\n", encoding="utf-8"))
    assert (result.format, result.encoding) == ("csv", "utf-8")
    assert result.frame["category"].tolist() == ["Bar", "Café", "Office"]


def test_header_csv_latin1(tmp_path):
    result = load_checkins(write(tmp_path, "\n".join([HEADER, *good_rows(",")]) + "\n", encoding="latin-1"))
    assert (result.format, result.encoding) == ("csv", "latin-1")
    assert result.frame["category"].tolist()[1] == "Café"


def test_raw_file_in_utf8_is_read_as_utf8(tmp_path):
    result = load_checkins(raw_file(tmp_path, good_rows(), encoding="utf-8"))
    assert result.encoding == "utf-8" and result.frame["category"].tolist()[1] == "Café"


def test_utf8_bom_is_ignored(tmp_path):
    text = "\ufeff" + "\n".join([HEADER, *good_rows(",")])
    result = load_checkins(write(tmp_path, text, encoding="utf-8"))
    assert result.format == "csv" and len(result.frame) == 3


def test_header_columns_in_any_order(tmp_path):
    names = list(CSV_HEADER)
    order = [7, 0, 1, 2, 3, 4, 5, 6]
    lines = [",".join(names[i] for i in order)] + [
        ",".join(line.split(",")[i] for i in order) for line in good_rows(",")
    ]
    frame = load_checkins(write(tmp_path, "\n".join(lines))).frame
    assert tuple(frame.columns) == COLUMNS
    assert frame["utc_time"].iloc[0] == pd.Timestamp("2012-04-03 18:00:09")


def test_csv_quoted_fields(tmp_path):
    lines = [
        HEADER,
        row(category='"Bar, Pub"', time=f'"{TIME}"', sep=","),
        row(user='"2"', category='"A ""quoted"" name"', sep=","),
    ]
    frame = load_checkins(write(tmp_path, "\n".join(lines))).frame
    assert frame["category"].tolist() == ["Bar, Pub", 'A "quoted" name']
    assert frame["user"].tolist() == ["1", "2"]


def test_tab_separated_with_header(tmp_path):
    result = load_checkins(write(tmp_path, "\n".join(["\t".join(CSV_HEADER), *good_rows()])))
    assert result.format == "tsv" and len(result.frame) == 3


def test_gzip_detected_by_content_not_name(tmp_path):
    data = gzip.compress(("\n".join(good_rows()) + "\n").encode("latin-1"))
    result = load_checkins(write(tmp_path, data, name="checkins.txt"))
    assert result.compression == "gzip" and len(result.frame) == 3


def test_zip_with_one_file(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/checkins.csv", "\n".join([HEADER, *good_rows(",")]))
        archive.writestr("__MACOSX/data/._checkins.csv", b"\x00\x05\x16\x07")
    result = load_checkins(write(tmp_path, buffer.getvalue(), name="upload.bin"))
    assert (result.compression, result.format) == ("zip", "csv") and len(result.frame) == 3


def test_zip_with_two_files_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "\n".join(good_rows()))
        archive.writestr("b.txt", "\n".join(good_rows()))
    assert "exactly one" in str(load_error(buffer.getvalue()))


def test_a_zip_member_without_a_name_is_a_data_error_not_a_crash():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("checkins.txt", "\n".join(good_rows()))
        archive.filelist[0].filename = ""  # as a damaged archive's directory can name it
    assert "exactly one data file, but holds 0" in str(load_error(buffer.getvalue()))


def test_bytes_source_equals_path_source(tmp_path):
    path = raw_file(tmp_path, good_rows())
    pd.testing.assert_frame_equal(load_checkins(path.read_bytes()).frame, load_checkins(path).frame)


def test_str_path_is_accepted(tmp_path):
    assert len(load_checkins(str(raw_file(tmp_path, good_rows()))).frame) == 3


def test_loading_writes_nothing_next_to_the_file(tmp_path):
    path = raw_file(tmp_path, good_rows())
    load_checkins(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_windows_line_endings_and_blank_lines(tmp_path):
    text = "\r\n".join(["", good_rows()[0], "", good_rows()[1], good_rows()[2], "", ""])
    assert len(load_checkins(write(tmp_path, text)).frame) == 3


def test_last_line_without_newline(tmp_path):
    frame = load_checkins(write(tmp_path, "\n".join(good_rows()))).frame
    assert frame["utc_time"].iloc[-1] == pd.Timestamp("2012-04-05 12:00:00")


def test_timestamp_offset_is_converted_to_utc(tmp_path):
    frame = load_checkins(raw_file(tmp_path, [row(time="Tue Apr 03 18:00:09 +0130 2012")])).frame
    assert frame["utc_time"].iloc[0] == pd.Timestamp("2012-04-03 16:30:09")


def test_one_digit_day_is_accepted(tmp_path):
    frame = load_checkins(raw_file(tmp_path, [row(time="Tue Apr 3 18:00:09 +0000 2012")])).frame
    assert frame["utc_time"].iloc[0] == pd.Timestamp("2012-04-03 18:00:09")


def test_text_fields_are_stripped(tmp_path):
    frame = load_checkins(raw_file(tmp_path, [row(user=" 7 ", category="  Bar ")])).frame
    assert (frame["user"].iloc[0], frame["category"].iloc[0]) == ("7", "Bar")


def test_leap_day_is_valid(tmp_path):
    frame = load_checkins(raw_file(tmp_path, [row(time="Wed Feb 29 10:00:00 +0000 2012")])).frame
    assert frame["utc_time"].iloc[0] == pd.Timestamp("2012-02-29 10:00:00")


# --- errors name the problem, line and column ------------------------------------------------


def test_empty_file(tmp_path):
    assert "empty" in str(load_error(write(tmp_path, b"")))


def test_whitespace_only_file(tmp_path):
    assert "empty" in str(load_error(write(tmp_path, b" \n\n\t\n")))


def test_binary_file(tmp_path):
    error = load_error(write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))))
    assert "not text" in str(error)


def test_utf16_file(tmp_path):
    text = ("\n".join(good_rows())).encode("utf-16")
    assert "UTF-16" in str(load_error(write(tmp_path, text)))


def test_unknown_encoding_names_the_line(tmp_path):
    lines = good_rows()
    lines[1] = row(category="Joe\x92s Bar")  # Windows-1252 apostrophe: a control code in Latin-1
    error = load_error(write(tmp_path, "\n".join(lines).encode("latin-1")))
    assert error.line == 2 and "UTF-8" in str(error)


def test_file_not_found(tmp_path):
    assert "no file" in str(load_error(tmp_path / "missing.txt"))


def test_folder_instead_of_file(tmp_path):
    assert "folder" in str(load_error(tmp_path))


def test_wrong_delimiter(tmp_path):
    error = load_error(raw_file(tmp_path, [row(sep=";")]))
    assert error.line == 1 and "semicolons" in str(error)


def test_wrong_number_of_columns_names_line_and_counts(tmp_path):
    lines = good_rows() + [row() + "\textra"]
    error = load_error(raw_file(tmp_path, lines))
    assert error.line == 4 and "9" in str(error) and "8" in str(error)


def test_too_few_columns(tmp_path):
    lines = ["", *good_rows()]
    lines[2] = "\t".join(row().split("\t")[:6])
    error = load_error(raw_file(tmp_path, lines))
    assert error.line == 3 and "6 tab-separated columns" in str(error)


def test_header_missing_column(tmp_path):
    header = ",".join(name for name in CSV_HEADER if name != "timezoneOffset")
    error = load_error(write(tmp_path, header + "\n" + row(sep=",")))
    assert (error.line, error.column) == (1, "timezoneOffset")


def test_header_extra_column(tmp_path):
    error = load_error(write(tmp_path, HEADER + ",comment\n" + row(sep=",") + ",x"))
    assert (error.line, error.column) == (1, "comment")


def test_csv_without_header(tmp_path):
    assert "header" in str(load_error(raw_file(tmp_path, good_rows(","))))


def test_header_without_rows(tmp_path):
    assert "no check-ins" in str(load_error(write(tmp_path, HEADER + "\n")))


@pytest.mark.parametrize(
    "field, value, column, reason",
    [
        ("lat", "north", "latitude", "non-numeric latitude"),
        ("lat", "", "latitude", "non-numeric latitude"),
        ("lat", "91.5", "latitude", "latitude out of range"),
        ("lon", "-180.01", "longitude", "longitude out of range"),
        ("lon", "nan", "longitude", "non-numeric longitude"),
        ("tz", "-240.5", "tz_offset", "non-integer timezone offset"),
        ("tz", "minus", "tz_offset", "non-integer timezone offset"),
        ("tz", "900", "tz_offset", "timezone offset out of range"),
        ("time", "2012-04-03 18:00:09", "utc_time", "unparseable timestamp"),
        ("time", "Thu Feb 30 18:00:09 +0000 2012", "utc_time", "impossible timestamp"),
        ("time", "Tue Apr 03 24:00:09 +0000 2012", "utc_time", "impossible timestamp"),
        ("user", "", "user", "missing user id"),
        ("category", "  ", "category", "missing category"),
    ],
)
def test_bad_value_names_line_and_column(tmp_path, field, value, column, reason):
    lines = good_rows()
    lines[1] = row(**{field: value})
    error = load_error(raw_file(tmp_path, lines))
    assert (error.line, error.column) == (2, column)
    assert reason in str(error)


def test_first_bad_line_is_reported(tmp_path):
    lines = good_rows() + [row(lat="100"), row(time="never")]
    lines[1] = row(time="Fri Feb 30 18:00:09 +0000 2012")
    assert load_error(raw_file(tmp_path, lines)).line == 2


def test_csv_error_uses_the_header_name_and_counts_the_header_line(tmp_path):
    lines = [HEADER, *good_rows(",")]
    lines[3] = row(time="soon", sep=",")
    error = load_error(write(tmp_path, "\n".join(lines)))
    assert (error.line, error.column) == (4, "utcTimestamp")


def test_error_message_says_what_to_do(tmp_path):
    message = str(load_error(raw_file(tmp_path, [row(lat="north")])))
    assert "'north'" in message and "skip" in message and "decimal number" in message


def test_unclosed_quote_in_csv(tmp_path):
    lines = [HEADER, *good_rows(","), row(category='"Bar', sep=",")]
    assert load_error(write(tmp_path, "\n".join(lines))).line == 5


def test_damaged_gzip(tmp_path):
    data = gzip.compress(("\n".join(good_rows()) * 50).encode())
    assert "gzip" in str(load_error(data[: len(data) // 2]))


def test_bigger_than_max_bytes(tmp_path):
    path = raw_file(tmp_path, good_rows())
    assert "limit" in str(load_error(path, max_bytes=50))


def test_decompressed_size_is_limited_too():
    data = gzip.compress(("\n".join(good_rows()) + "\n").encode() * 1000)
    assert len(data) < 2000
    assert "decompressed" in str(load_error(data, max_bytes=10_000))


def test_max_bytes_allows_a_file_within_it(tmp_path):
    path = raw_file(tmp_path, good_rows())
    assert len(load_checkins(path, max_bytes=path.stat().st_size).frame) == 3


# --- skipping bad rows and duplicates --------------------------------------------------------


def test_skip_bad_rows_counts_by_reason(tmp_path):
    lines = good_rows() + [row(lat="100"), row(lat="95"), row(time="never"), row() + "\tx", row(tz="1000")]
    result = load_checkins(raw_file(tmp_path, lines), skip_bad_rows=True)
    assert len(result.frame) == 3
    assert result.skipped == {
        "latitude out of range": 2,
        "unparseable timestamp": 1,
        "wrong number of columns": 1,
        "timezone offset out of range": 1,
    }


def test_skipping_keeps_the_good_rows_in_order(tmp_path):
    lines = [row(lat="100"), *good_rows(), row() + "\tx"]
    frame = load_checkins(raw_file(tmp_path, lines), skip_bad_rows=True).frame
    assert frame["venue"].tolist() == ["v1", "v2", "v3"]


def test_skip_bad_rows_when_every_row_is_bad(tmp_path):
    error = load_error(raw_file(tmp_path, [row(lat="100"), row(time="never")]), skip_bad_rows=True)
    assert "none of the 2 rows" in str(error)


def test_skip_bad_rows_still_refuses_a_binary_file(tmp_path):
    with pytest.raises(DataError):
        load_checkins(write(tmp_path, b"\x00\x01\x02binary"), skip_bad_rows=True)


def test_skip_bad_rows_still_refuses_a_wrong_format(tmp_path):
    with pytest.raises(DataError):
        load_checkins(raw_file(tmp_path, [row(sep=";")] * 3), skip_bad_rows=True)


def test_duplicates_are_dropped_and_counted(tmp_path):
    lines = good_rows() + [good_rows()[0], good_rows()[2], good_rows()[0]]
    result = load_checkins(raw_file(tmp_path, lines))
    assert result.frame["venue"].tolist() == ["v1", "v2", "v3"]
    assert result.skipped == {"duplicate row": 3}


def test_rows_differing_in_one_field_are_not_duplicates(tmp_path):
    lines = [row(), row(time="Tue Apr 03 18:00:10 +0000 2012")]
    assert len(load_checkins(raw_file(tmp_path, lines)).frame) == 2


def test_result_is_frozen(tmp_path):
    result = load_checkins(raw_file(tmp_path, good_rows()))
    assert isinstance(result, LoadResult)
    with pytest.raises(AttributeError):
        result.format = "csv"  # type: ignore[misc]


# --- timestamps ------------------------------------------------------------------------------


def test_format_utc_is_the_inverse_of_parse_utc():
    times = pd.to_datetime(["2012-04-03 18:00:09", "2000-02-29 00:00:00", "1969-12-31 23:59:59"]).to_numpy()
    text = format_utc(times)
    assert text[0] == TIME
    parsed, codes = parse_utc(text)
    assert (parsed == times).all() and (codes == 0).all()


# --- property-based --------------------------------------------------------------------------


def _unambiguous(text: str) -> bool:
    """Latin-1 text whose bytes are not also valid UTF-8 (such a file is read as UTF-8, by design)."""
    try:
        text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return True
    return text.isascii()


_TEXT = (
    st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
    .filter(_unambiguous)
)
_ROWS = st.lists(
    st.tuples(
        _TEXT,
        _TEXT,
        _TEXT,
        _TEXT,
        st.floats(-90, 90, allow_nan=False),
        st.floats(-180, 180, allow_nan=False),
        st.integers(-720, 840),
        st.datetimes(
            min_value=pd.Timestamp("1900-01-01").to_pydatetime(), max_value=pd.Timestamp("2100-12-31").to_pydatetime()
        ),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS)
def test_random_rows_round_trip(tmp_path, rows):
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["utc_time"] = pd.to_datetime(frame["utc_time"]).dt.floor("s").astype("datetime64[ns]")
    path = tmp_path / "round_trip.txt"
    write_raw(frame, path)
    loaded = load_checkins(path)
    expected = frame.drop_duplicates().reset_index(drop=True)
    # pandas' fast float parser may differ from Python's in the 16th significant digit.
    pd.testing.assert_frame_equal(loaded.frame, expected, check_exact=False, rtol=1e-12, atol=1e-12)
    assert loaded.skipped.get("duplicate row", 0) == len(frame) - len(expected)


def _good_file(kind: str) -> bytes:
    if kind == "quoted":
        lines = [HEADER, row(category='"Bar, Pub"', time=f'"{TIME}"', sep=","), *good_rows(",")]
    elif kind == "csv":
        lines = [HEADER, *good_rows(",")]
    else:
        lines = good_rows()
    return compressed(("\n".join(lines) + "\n").encode("latin-1"), kind)


@pytest.mark.parametrize("kind", ["raw", "csv", "quoted", "gzip", "zip"])
def test_uncorrupted_fuzz_inputs_load(kind):
    assert len(load_checkins(_good_file(kind)).frame) >= 3


_CORRUPTION = st.lists(
    st.tuples(
        st.sampled_from(["replace", "insert", "delete", "truncate"]),
        st.integers(0, 10_000),
        st.binary(min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["raw", "csv", "quoted", "gzip", "zip"]), corruption=_CORRUPTION, skip=st.booleans())
def test_corrupted_files_give_a_data_error_or_a_valid_frame(kind, corruption, skip):
    data = bytearray(_good_file(kind))
    for action, position, payload in corruption:
        at = position % (len(data) + 1)
        if action == "replace":
            data[at : at + len(payload)] = payload
        elif action == "insert":
            data[at:at] = payload
        elif action == "delete":
            del data[at : at + len(payload)]
        else:
            del data[at:]
    try:
        result = load_checkins(bytes(data), skip_bad_rows=skip)
    except DataError:
        return
    frame = result.frame
    assert tuple(frame.columns) == COLUMNS and dict(frame.dtypes) == DTYPES
    assert len(frame) >= 1
    assert frame["latitude"].abs().le(90).all() and frame["longitude"].abs().le(180).all()
    assert frame["tz_offset"].between(-720, 840).all() and frame["utc_time"].notna().all()
    assert (frame[["user", "venue", "category_id", "category"]] != "").all().all()


# --- the real NYC files (skipped when absent) ------------------------------------------------


@pytest.mark.skipif(
    not (REAL_DIR / "dataset_TSMC2014_NYC_subset_reconstructed.txt").exists(), reason="real data absent"
)
def test_real_subset_file():
    result = load_checkins(REAL_DIR / "dataset_TSMC2014_NYC_subset_reconstructed.txt")
    # 147,918 lines, of which 386 exact duplicates (times truncated to the minute) are dropped.
    assert len(result.frame) + result.skipped["duplicate row"] == 147_918
    assert len(result.frame) == 147_532 and result.skipped == {"duplicate row": 386}
    assert result.frame["user"].nunique() == 1_083
    assert (result.format, result.encoding) == ("raw", "latin-1")
    assert "Café" in set(result.frame["category"])
    assert dict(result.frame.dtypes) == DTYPES


@pytest.mark.skipif(not (REAL_DIR / "nyc_sample_160users.txt").exists(), reason="real data absent")
def test_real_sample_file():
    result = load_checkins(REAL_DIR / "nyc_sample_160users.txt")
    assert len(result.frame) + result.skipped.get("duplicate row", 0) == 19_986
    assert result.frame["user"].nunique() == 160
