"""Every setting of the config, walked from its field metadata, reaches the CLI (a flag that sets it), the
settings form (a widget that sets it) and the report's settings table."""

from __future__ import annotations

import html

import pytest

from fedlab import cli
from fedlab.config import PRESETS, ExperimentConfig, settings
from fedlab.results.report import run_report_html
from fedlab.results.settings_text import value_text
from fedlab.runs.store import RunStore
from tests.helpers import assert_clean
from tests.pages_support import app, db  # noqa: F401

SETTINGS = list(settings())
NAMES = [name for name, _, _ in SETTINGS]
SIDEBAR_KEYS = {"data": "source_path", "skip_bad_rows": "source_skip_bad_rows"}  # the data source's widgets


# Settings whose next value is not allowed (compression skips 1 bit; momentum stays below 1).
OTHER_VALUES = {"compression_bits": 8, "server_momentum": 0.5}
# Settings that every config refuses on this runtime (none today; secure aggregation runs, simulated).
REFUSED_HERE: set[str] = set()
ALLOWED = [(name, s, default) for name, s, default in SETTINGS if name not in REFUSED_HERE]
ALLOWED_NAMES = [name for name, _, _ in ALLOWED]
# Settings that need another one set (DP noise a clipping norm; reconstruction a user feature), and its CLI flags.
NEEDS = {"dp_noise": {"dp_clip": 1.0}, "reconstruction": {"features": PRESETS["biggest"]}}
NEEDS_FLAGS = {"dp_noise": ["--dp-clip", "1"], "reconstruction": ["--preset", "biggest"]}


def other_value(name, setting, default):
    """A value of the setting that is allowed and not its default."""
    if name in OTHER_VALUES:
        return OTHER_VALUES[name]
    if setting.kind == "int":
        return setting.min + 1 if default is None else default + 1
    if setting.kind == "float":
        return (setting.min + setting.max) / 2 if default is None else round(default + 0.1, 3)
    if setting.kind == "choice":
        return next(c for c in setting.choices if c != default)
    return {
        "bool": True,
        "path": "checkins.txt",
        "text": "my run",
        "list": ("worker:8000",),
        "features": PRESETS["biggest"],
    }[setting.kind]


def cli_text(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def with_value(name, value) -> ExperimentConfig:
    return ExperimentConfig().replace(**NEEDS.get(name, {}), **{name: value})


@pytest.mark.parametrize("name, setting, default", ALLOWED, ids=ALLOWED_NAMES)
def test_a_cli_flag_sets_the_setting(name, setting, default):
    value = other_value(name, setting, default)
    flag = setting.flag or "--" + name.replace("_", "-")
    extra = NEEDS_FLAGS.get(name, [])
    args = [flag] if setting.kind == "bool" else [flag, cli_text(value)]
    config = cli.experiment_config_from(cli.build_parser().parse_args(["run", *extra, *args]))
    assert config.value(name) == value
    back = config.replace(**{"name": "", name: default})
    assert back == ExperimentConfig().replace(name="", **NEEDS.get(name, {}))  # nothing else changed


@pytest.mark.parametrize("name, setting, default", ALLOWED, ids=ALLOWED_NAMES)
def test_the_report_settings_table_shows_the_setting(name, setting, default, tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    value = other_value(name, setting, default)
    run = store.get_run(store.create_run(with_value(name, value), name="r"))
    page = run_report_html(run, store.rounds(run.id))
    row = f"<tr><th>{html.escape(setting.label)}</th><td>{html.escape(value_text(setting, value))}</td></tr>"
    assert row in page


def test_every_form_setting_has_a_widget_that_reaches_the_config(db):  # noqa: F811
    from fedlab.dashboard import settings as form
    from fedlab.dashboard.state import SYNTHETIC

    at = app("train")
    at.sidebar.radio(key="source_kind").set_value("path").run()
    assert_clean(at)
    keys = {
        w.key
        for kind in ("number_input", "selectbox", "radio", "checkbox", "text_input", "multiselect")
        for w in at.get(kind)
    } | {w.key for kind in ("text_input", "checkbox") for w in at.sidebar.get(kind)}
    for name, setting, default in SETTINGS:
        assert SIDEBAR_KEYS.get(name, f"train_{name}") in keys, name
        if name in SIDEBAR_KEYS or name in REFUSED_HERE:
            continue
        value = other_value(name, setting, default)
        values = {**form.default_settings(), name: value, "dp": setting.switch is not None or name == "dp_noise"}
        if name == "reconstruction":
            values["features"] = list(NEEDS[name]["features"])
        if setting.kind == "list":
            values[name] = ",".join(value)
        config = form.config_from_settings(values, SYNTHETIC, False)
        assert config.value(name) == value, name


def test_the_prebuilt_default_config_is_the_train_forms_default():
    # The pre-build warms the model a first Run uses; state builds that config without the form module.
    from fedlab.dashboard import settings as form
    from fedlab.dashboard.state import SYNTHETIC, default_train_config

    assert default_train_config() == form.config_from_settings(form.default_settings("central"), SYNTHETIC, False)
