"""Settings as a person reads them, made from the config's field metadata: one value, the rows of a
settings table (the HTML report) and a run's one-line summary (dashboard and run list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedlab.config import ExperimentConfig, Setting, is_data_setting, settings


def value_text(setting: Setting, value: Any) -> str:
    """A setting's value for display: its 'none' text for None or an empty list, yes/no, lists joined."""
    if value is None or value in ((), [], ""):
        return setting.none or "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def settings_rows(config: ExperimentConfig) -> list[tuple[str, str]]:
    """(label, value) of every setting, in the config's field order (data settings first)."""
    return [(s.label, value_text(s, config.value(name))) for name, s, _ in settings()]


def describe(config: ExperimentConfig) -> str:
    """One line of a run's settings: the main ones always, then the others it changed from their defaults,
    e.g. "central · federated · 10 rounds · 4 local epochs · ... · IID clients · client dropout 10%"."""
    return " · ".join([*_parts(config, always=True), *_parts(config, always=False)])


def what_if_parts(config: ExperimentConfig) -> list[str]:
    """The settings a run changed from their defaults that the summary names (none when it changed none)."""
    return _parts(config, always=False)


def data_label(config: ExperimentConfig) -> str:
    """The data's short name: the file's name, or the synthetic city."""
    return "synthetic city" if config.data.data is None else Path(config.data.data).name


def _parts(config: ExperimentConfig, *, always: bool) -> list[str]:
    from fedlab.runs.store import feature_label  # the preset name of a feature list

    values = {name: config.value(name) for name, _, _ in settings()}
    chosen = [(name, s, default) for name, s, default in settings() if s.summary and s.summary_always == always]
    if always:  # what is trained (features, mode, schedule, model) reads first, then the data it is trained on
        chosen.sort(key=lambda item: is_data_setting(item[0]))
    parts = []
    for name, s, default in chosen:
        value = values[name]
        if always or value != default:
            text = feature_label(value) if s.kind == "features" else value_text(s, value)
            parts.append(s.summary.format(value=value, text=text, file=data_label(config), **values))
    return parts
