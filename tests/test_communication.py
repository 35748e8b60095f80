"""Bytes per round where a run shows: the store (and its migration), charts, the metrics table, TensorBoard,
the CLI's refusals and the Train page's new controls."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from fedlab.config import DISTRIBUTED_DP_UNAVAILABLE, SECURE_WITH_COMPRESSION, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.records import RoundRecord, communication_totals
from fedlab.results import charts
from fedlab.results.metrics_table import SAVED_ROW, SENT_ROW, metrics_table
from fedlab.runs.store import SCHEMA_VERSION, RunStore
from tests.pages_support import app, db  # noqa: F401
from tests.test_cli import fedlab


def sent_rounds(count: int = 3, *, down: int = 2_000_000, up: int = 500_000, saved: int = 0) -> list[RoundRecord]:
    return [
        RoundRecord(
            round=n,
            train_loss=1.0,
            train_accuracy=0.1 * n,
            val_loss=1.0,
            val_accuracy=0.1 * n,
            clients=4,
            seconds=0.1,
            bytes_down=down,
            bytes_up=up,
            bytes_saved=saved,
        )
        for n in range(1, count + 1)
    ]


def test_the_store_keeps_each_rounds_bytes(tmp_path: Path):
    store = RunStore(tmp_path / "fedlab.db")
    run_id = store.create_run(ExperimentConfig(), name="r")
    for record in sent_rounds(saved=7):
        store.add_round(run_id, record)
    frame = store.rounds(run_id)
    assert list(frame["bytes_down"]) == [2_000_000] * 3 and list(frame["bytes_saved"]) == [7] * 3
    exported = store.export_json(run_id)
    assert '"bytes_up": 500000' in exported


def test_a_store_of_schema_1_gains_the_bytes_columns_and_keeps_its_rounds(tmp_path: Path):
    path = tmp_path / "fedlab.db"
    store = RunStore(path)
    run_id = store.create_run(ExperimentConfig(), name="old")
    store.add_round(run_id, sent_rounds(1)[0])
    with sqlite3.connect(path) as conn:  # back to what schema 1 had
        for column in ("bytes_down", "bytes_up", "bytes_saved", "clipped", "zeroed"):
            conn.execute(f"ALTER TABLE rounds DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 1")
    frame = RunStore(path).rounds(run_id)
    assert len(frame) == 1 and frame["bytes_up"].tolist() == [0] and frame["val_accuracy"].tolist() == [0.1]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_communication_totals_add_up_the_rounds_in_megabytes():
    totals = communication_totals([r.to_dict() for r in sent_rounds(saved=250_000)])
    assert totals == {"mb_down": 6.0, "mb_up": 1.5, "mb_saved": 0.75}


def test_cumulative_megabytes_and_accuracy_per_megabyte_charts():
    rounds = pd.DataFrame([r.to_dict() for r in sent_rounds()])
    sent = charts.cumulative_megabytes(rounds)
    assert sent["total"].tolist() == pytest.approx([2.5, 5.0, 7.5])
    per_round = charts.megabytes_per_round({"a": rounds})
    assert [list(t.y) for t in per_round.data] == [pytest.approx([0.5, 1.0, 1.5]), pytest.approx([2.0, 4.0, 6.0])]
    per_mb = charts.accuracy_vs_megabytes({"a": rounds})
    assert list(per_mb.data[0].x) == pytest.approx([2.5, 5.0, 7.5])
    assert list(per_mb.data[0].y) == pytest.approx([0.1, 0.2, 0.3])


def test_runs_that_sent_nothing_draw_no_communication_curves():
    centralized = pd.DataFrame([r.to_dict() for r in sent_rounds(down=0, up=0)])
    assert not charts.sends_bytes({"c": centralized})
    assert not charts.accuracy_vs_megabytes({"c": centralized}).data


def test_the_metrics_table_shows_megabytes_and_what_compression_saved():
    rounds = {
        "plain": pd.DataFrame([r.to_dict() for r in sent_rounds()]),
        "4-bit": pd.DataFrame([r.to_dict() for r in sent_rounds(up=100_000, saved=400_000)]),
    }
    table = metrics_table({"plain": {}, "4-bit": {}}, {}, rounds)
    assert table.loc[SENT_ROW].tolist() == ["6.000 / 1.500", "6.000 / 0.300"]
    assert table.loc[SAVED_ROW].tolist() == ["0.000", "1.200"]


def test_tensorboard_logs_megabytes_of_federated_rounds(tmp_path: Path):
    from fedlab.runs.tblog import TensorBoardLog
    from tests.test_tblog import read_scalars

    with TensorBoardLog(tmp_path / "run") as log:
        for record in sent_rounds(2):
            log.write(record)
    scalars = read_scalars(tmp_path / "run" / "train")
    assert [value for _, value in scalars["communication/mb_down"]] == pytest.approx([2.0, 2.0])
    assert [value for _, value in scalars["communication/mb_up"]] == pytest.approx([0.5, 0.5])


def test_secure_aggregation_is_allowed_and_refused_only_with_what_it_cannot_combine():
    assert ExperimentConfig(secure_aggregation=True).secure_aggregation
    with pytest.raises(ConfigError, match="secure aggregation and compression cannot be combined"):
        ExperimentConfig(secure_aggregation=True, compression_bits=8)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--secure-aggregation", "--compression-bits", "8"], SECURE_WITH_COMPRESSION),
        (["--secure-aggregation", "--dp-clip", "1"], DISTRIBUTED_DP_UNAVAILABLE),
        (["--compression-bits", "1"], "compression bits must be 0 (off) or 2-16, not 1"),
        (["--compression-bits", "17"], "compression bits must be a whole number of at most 16"),
        (["--algorithm", "scaffold"], "invalid choice: 'scaffold' (choose from 'fedavg', 'fedprox', 'mime')"),
        (["--server-momentum", "1"], "server momentum must be a number below 1"),
        (["--mode", "centralized", "--compression-bits", "8"], "apply to federated runs only"),
    ],
)
def test_refused_settings_are_one_line_and_exit_2(args, fragment):
    out = fedlab("run", *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and fragment in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_the_train_page_has_the_new_controls(db):  # noqa: F811
    at = app("train")
    assert at.selectbox(key="train_algorithm").value == "fedavg"
    assert [option.split(" · ")[0] for option in at.selectbox(key="train_server_optimizer").options] == [
        "sgd",
        "sgdm",
        "adam",
        "yogi",
        "adagrad",
    ]
    assert "FedAvgM" in at.selectbox(key="train_server_optimizer").help
    assert at.number_input(key="train_prox_mu").value == pytest.approx(0.01)
    assert at.number_input(key="train_server_momentum").value == pytest.approx(0.9)
    assert at.number_input(key="train_compression_bits").value == 0
    assert at.checkbox(key="train_secure_aggregation").value is False


def test_the_train_page_refuses_secure_aggregation_with_compression_with_the_same_sentence(db):  # noqa: F811
    at = app("train")
    at.checkbox(key="train_secure_aggregation").check()
    at.number_input(key="train_compression_bits").set_value(8)
    at.button(key="train_btn_run").click().run()
    assert any(SECURE_WITH_COMPRESSION in e.value for e in at.error)
