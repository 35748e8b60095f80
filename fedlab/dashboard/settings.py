"""The training settings form (Train page and both Compare columns), its what-if controls with the live
privacy budget, and turning the form into an ExperimentConfig that is queued.

Every widget is made from the config fields' metadata (fedlab.config.Setting): label, help, limits,
choices and the form group it sits in; this module only lays the groups out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import streamlit as st

from fedlab.config import (
    GROUPING_NAMES,
    KNOWN_FEATURES,
    PRESETS,
    QUICK_DEMO,
    RECONSTRUCTION_BEST,
    ExperimentConfig,
    Setting,
    settings,
)
from fedlab.dashboard.state import (
    DataSource,
    data_source,
    job_manager,
    session_id,
    set_default,
    show_error,
    skip_bad_rows,
)
from fedlab.errors import ConfigError
from fedlab.results.privacy import PrivacyBudget

__all__ = ["GROUPING_NAMES"]  # the Data page labels its grouping choice with the same names

FEATURE_NAMES = {
    "cat_id": "category of the check-in",
    "user_id": "who checked in",
    "latitude": "venue latitude",
    "longitude": "venue longitude",
    "is_weekend": "weekend or not",
    "clock_sin": "time of day (sin)",
    "clock_cos": "time of day (cos)",
    "day_sin": "day of month (sin)",
    "day_cos": "day of month (cos)",
    "month_sin": "month (sin)",
    "month_cos": "month (cos)",
    "week_day_sin": "weekday (sin)",
    "week_day_cos": "weekday (cos)",
    "venue_id": "which venue",
    "orig_cat_id": "fine Foursquare category",
    "user_habits": "where this user went next after this category before (counted on their own device)",
}
FEDADAM = {"client_optimizer": "sgd", "client_lr": 0.3, "server_optimizer": "adam", "server_lr": 0.01}
PRESET_BUTTONS = {
    "central": ("Central preset", "Category plus the 8 cyclic time features (the study's central model)."),
    "biggest": ("Biggest preset", "Every feature of the study, including user, venue and position."),
    "habits": (
        "Habits preset",
        "Biggest plus each user's own habits: the shares of categories they went to next "
        "after this one, counted from their earlier check-ins on their own device.",
    ),
}
QUICK_DEMO_HELP = (
    "Small settings for a first look: "
    + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in QUICK_DEMO.items() if k != "features")
    + ", central features. On two cores its five rounds "
    "take about 2-3 s each once the federated computation is built (about 8 s the first time), "
    "and it beats the majority and Markov baselines on the synthetic city, not the per-user ones."
)

RECONSTRUCTION_BEST_HELP = (
    "Federated Reconstruction as chosen on the validation data of the real NYC check-ins: the habits features, "
    "each user's part kept on their device and re-learnt there, "
    + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in RECONSTRUCTION_BEST.items() if k not in ("features", "reconstruction")
    )
    + ". Its test accuracy, seeds 0-2, and the settings it was chosen from are in docs/results.md."
)

# Buttons that fill several settings at once: key suffix -> (label, settings, icon, help).
BUNDLE_BUTTONS = {
    "quick": ("Quick demo", QUICK_DEMO, ":material/bolt:", QUICK_DEMO_HELP),
    "recon_best": ("FedRecon, best", RECONSTRUCTION_BEST, ":material/person_pin:", RECONSTRUCTION_BEST_HELP),
}


# ----- which settings the form shows -----


def form_settings() -> list[tuple[str, Setting, object]]:
    """(field, Setting, default) of every setting drawn by the form; the data source comes from the sidebar."""
    return [item for item in settings() if item[1].group != "source"]


def _switches() -> dict[str, object]:
    return {s.switch.key: s.switch for _, s, _ in form_settings() if s.switch is not None}


SETTING_FIELDS = (*(name for name, _, _ in form_settings()), *_switches())


def default_settings(preset: str = "central") -> dict:
    """The form's start values (the config's defaults, the study's), with the features of `preset`."""
    values = {}
    for name, s, default in form_settings():
        values[name] = s.on_value if s.switch is not None else default
    values.update({key: False for key in _switches()})
    values["features"] = list(PRESETS[preset])
    values["workers"] = ", ".join(values["workers"])
    return values


def setting_keys(prefix: str) -> list[str]:
    return [f"{prefix}_{field}" for field in SETTING_FIELDS]


def kept_keys() -> list[str]:
    """The widget keys of every settings form (Train and both Compare columns), kept across pages."""
    return [*setting_keys("train"), *setting_keys("cmp_a"), *setting_keys("cmp_b")]


# ----- the form -----


def _set_preset(prefix: str, preset: str) -> None:
    st.session_state[f"{prefix}_features"] = list(PRESETS[preset])


def _set_bundle(prefix: str, bundle: dict) -> None:
    for name, value in bundle.items():
        st.session_state[f"{prefix}_{name}"] = list(value) if name == "features" else value


def settings_form(prefix: str, *, preset: str = "central", columns: int = 4, workers: bool = False) -> dict:
    """All training settings as widgets keyed "<prefix>_<field>"; returns their values by field.

    `workers` adds the TFF workers field (the Train page's)."""
    key = functools.partial("{}_{}".format, prefix)
    for field, value in default_settings(preset).items():
        if field != "features":
            set_default(key(field), value)
    groups = {}
    for name, s, _ in form_settings():
        groups.setdefault(s.group, []).append((name, s))
    _features(key, prefix, preset, *groups["features"][0])
    main = sorted(groups["main"], key=lambda item: item[1].widget == "radio")  # the wide radio last
    cells = _grid(columns, len(main))
    for name, s in main:
        _widget(next(cells), key(name), s)
    with st.expander("Optimizers, seed and more · what if (dropout, privacy)"):
        st.button(
            "FedAdam optimizers (for real data)",
            key=key("btn_fedadam"),
            on_click=_use_fedadam,
            args=(key,),
            help="Plain SGD 0.3 on the clients, Adam 0.01 on the server. On the real check-ins this trains "
            "far better than the defaults (client Adam), whose clients drift apart; it needs more rounds, "
            "so the quick synthetic demos keep the defaults.",
        )
        cells = _grid(min(columns, 3), len(groups["advanced"]))
        for name, s in groups["advanced"]:
            _widget(next(cells), key(name), s)
        _what_if_settings(key, groups["what_if"])
    for name, s in groups["name"] + (groups["workers"] if workers else []):
        _widget(st, key(name), s)
    return {field: st.session_state.get(key(field)) for field in SETTING_FIELDS}


def _features(key: Callable[[str], str], prefix: str, preset: str, name: str, s: Setting) -> None:
    # The current list (the preset at first) is the widget's own default, not only a session-state value: a
    # multiselect whose default is [] can show and send back [] when the browser draws it before the value
    # arrives, or after it lost its widget states (see _widget).
    current = st.session_state.get(key(name))
    st.multiselect(
        s.label,
        list(s.choices),
        default=list(PRESETS[preset]) if current is None else [f for f in current if f in s.choices],
        key=key(name),
        help=s.help + " " + "; ".join(f"**{f}**: {FEATURE_NAMES[f]}" for f in s.choices) + ".",
    )
    with st.container(horizontal=True):
        for preset_name, (label, help_text) in PRESET_BUTTONS.items():
            st.button(
                label, key=key(f"btn_{preset_name}"), on_click=_set_preset, args=(prefix, preset_name), help=help_text
            )
        for name, (label, bundle, icon, help_text) in BUNDLE_BUTTONS.items():
            st.button(
                label, key=key(f"btn_{name}"), on_click=_set_bundle, args=(prefix, bundle), icon=icon, help=help_text
            )


def _widget(cell, key: str, s: Setting, *, disabled: bool = False):
    """The widget of one setting, made from its metadata.

    Each widget's own default is the value it holds now. A browser that loses its widget states under quick
    edits (streamlit/streamlit#9056) puts widgets back to their defaults and sends those; with a fixed default
    that could be a number input's minimum (a server learning rate of 0) instead of what the form showed.
    """
    current = st.session_state.get(key)
    if s.kind in ("int", "float"):
        return _number_input(cell, key, s, disabled=disabled)
    if s.kind == "choice":
        options = list(s.choices)
        index = options.index(current) if current in options else 0
        if s.widget == "radio":
            return cell.radio(
                s.label,
                options,
                index=index,
                key=key,
                horizontal=True,
                help=s.form_help,
                disabled=disabled,
                format_func=lambda c: s.choice_labels.get(c, c),
            )
        return cell.selectbox(
            s.label,
            options,
            index=index,
            key=key,
            help=s.form_help,
            disabled=disabled,
            format_func=lambda c: f"{c} · {s.choice_labels[c]}" if c in s.choice_labels else c,
        )
    if s.kind == "bool":
        return cell.checkbox(s.label, value=bool(current), key=key, help=s.help, disabled=disabled)
    placeholder = f"off: {s.none}" if s.kind == "list" and s.none else None
    return cell.text_input(
        s.label,
        value="" if current is None else str(current),
        key=key,
        max_chars=None if s.kind == "list" else 80,
        help=s.help,
        placeholder=placeholder,
        disabled=disabled,
    )


def _number_input(cell, key: str, s: Setting, *, disabled: bool):
    """The number input of one setting, which survives a session value outside its limits.

    The browser never sends one, but Streamlit raises on such a value at every rerun, which would leave the
    page broken for the rest of the session; the value is put back in range instead, with a message.
    """
    kind = int if s.kind == "int" else float
    low, high = kind(s.min), kind(s.max)
    value = st.session_state.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    clearable = s.none is not None and s.switch is None  # empty means "none" (all clients, ...)
    if value is not None and not (number and low <= value <= high and kind(value) == value):
        st.session_state[key] = kind(min(max(value, low), high)) if number else (None if clearable else low)
        cell.error(
            f"{s.label} must be between {low:,} and {high:,}, not {value!r}; it is now {st.session_state[key]!r}. "
            "Check it, then press Run.",
            icon=":material/error:",
        )
    value = st.session_state.get(key)
    if value is None and not clearable:
        value = low
    return cell.number_input(
        s.label,
        value=value,
        key=key,
        min_value=low,
        max_value=high,
        step=kind(s.step or 1),
        format=s.format,
        help=s.help,
        disabled=disabled,
        placeholder=s.none if clearable else None,
    )


def _grid(columns: int, count: int):
    """`count` cells filled row by row across `columns` columns (widgets keep their reading order)."""
    cols = st.columns(columns)
    return iter([cols[i % columns] for i in range(count)])


def _use_fedadam(key: Callable[[str], str]) -> None:
    for field, value in FEDADAM.items():
        st.session_state[key(field)] = value


def _what_if_settings(key: Callable[[str], str], fields: list[tuple[str, Setting]]) -> None:
    """Client dropout and differential privacy, with the privacy budget they give (federated runs only).

    A switch (DP) sits in the cell before the first setting it turns on; those settings are greyed out while it
    is off."""
    st.markdown("**What if…** (federated runs only)")
    switches = {s.switch.key: s.switch for _, s in fields if s.switch is not None}
    cells = _grid(2, len(fields) + len(switches))  # dropout beside the DP switch, the two DP numbers below them
    drawn: set[str] = set()
    for name, s in fields:
        if s.switch is not None and s.switch.key not in drawn:
            drawn.add(s.switch.key)
            switch = key(s.switch.key)
            next(cells).checkbox(
                s.switch.label, value=bool(st.session_state.get(switch)), key=switch, help=s.switch.help
            )
        on = s.switch is None or bool(st.session_state.get(key(s.switch.key)))
        _widget(next(cells), key(name), s, disabled=not on)
    if st.session_state.get(key("dp")):
        _privacy_budget(key)


def _privacy_budget(key: Callable[[str], str]) -> None:
    """The (epsilon, delta) the current DP settings would spend if every round ran, next to the controls."""
    state = st.session_state
    noise, rounds, users = state.get(key("dp_noise")), state.get(key("rounds")), state.get(key("top_users"))
    per_round = state.get(key("clients_per_round"))
    if isinstance(users, int) and users < 2:
        st.caption("A privacy budget needs at least 2 users: with one, that user is the whole data set.")
        return
    try:
        budget = privacy_budget(float(noise), per_round, int(users), int(rounds))
    except (TypeError, ValueError):  # a field is empty or out of range; its own message says so
        return
    st.info(
        budget_text(budget, rounds=int(rounds), clients_per_round=per_round, total_clients=int(users)),
        icon=":material/lock:",
    )


@st.cache_data(show_spinner="Computing the privacy budget…", max_entries=256)
def privacy_budget(noise: float, clients_per_round: int | None, total_clients: int, rounds: int) -> PrivacyBudget:
    from fedlab.results.privacy import dp_epsilon  # loads dp_accounting (and scipy) only when DP is turned on

    return dp_epsilon(
        noise_multiplier=noise, clients_per_round=clients_per_round, total_clients=total_clients, rounds=rounds
    )


def budget_text(budget: PrivacyBudget, *, rounds: int, clients_per_round: int | None, total_clients: int) -> str:
    """One paragraph: epsilon at a stated delta, for how many rounds and clients, and how to read it."""
    sampled = total_clients if clients_per_round is None else min(clients_per_round, total_clients)
    setting = (
        f"{sampled:,} of {total_clients:,} clients a round, every one of the {total_clients:,} users "
        "counted as a client"
    )
    if math.isinf(budget.epsilon):
        return (
            f"Privacy budget if all {rounds} rounds run: **ε = ∞** ({setting}). Without noise, clipping alone "
            "promises no privacy; raise the noise multiplier."
        )
    reading = (
        "strong"
        if budget.epsilon <= 1
        else "moderate"
        if budget.epsilon <= 10
        else "weak — above about 10 it promises little"
    )
    return (
        f"Privacy budget if all {rounds} rounds run: **ε = {budget.epsilon:,.2f} at δ = {budget.delta:.1e}** "
        f"per user ({setting}). Smaller ε is more private; this is {reading}. Early stopping spends less."
    )


def config_from_settings(values: Mapping, source: DataSource, skip: bool) -> ExperimentConfig:
    """An ExperimentConfig from a settings form; ConfigError (one line) when a value is not allowed.

    A setting the values lack keeps its default, and so does one whose switch (DP) is off."""
    changes = {"data": source.path, "skip_bad_rows": skip}
    for name, s, default in form_settings():
        if name in values:
            switched_off = s.switch is not None and not values.get(s.switch.key, False)
            changes[name] = default if switched_off else _config_value(s, values[name])
    return ExperimentConfig().replace(**changes)


def _config_value(s: Setting, value):
    """A widget's value as the config takes it."""
    if s.kind == "features":
        # Known features in the study's order; an unknown name is kept so the config refuses it by name.
        chosen = set(value)
        return tuple(f for f in KNOWN_FEATURES if f in chosen) + tuple(f for f in value if f not in KNOWN_FEATURES)
    if s.kind == "list":
        text = value if isinstance(value, str) else ",".join(value or ())
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if s.kind == "text":
        return (value or "").strip()
    if s.kind == "bool":
        return bool(value)
    return value


ESTIMATE_RUNS = 20  # the newest finished runs the duration estimate learns from


def estimate_caption(values: Mapping) -> str:
    """The estimated duration of a run with these settings, from this store's earlier finished runs."""
    from fedlab.dashboard.state import run_store
    from fedlab.runs.estimate import duration_text, estimate_duration

    try:
        config = config_from_settings(values, data_source(), skip_bad_rows())
    except ConfigError:
        return "No time estimate: a setting is not allowed (pressing Run says which)."
    store = run_store()
    runs = store.list_runs(statuses=("finished",))[:ESTIMATE_RUNS]
    estimate = estimate_duration(config, [(run.config, store.rounds(run.id)) for run in runs])
    return (
        f"Estimate: about {duration_text(estimate.seconds)} for all {config.rounds} rounds, from "
        f"{estimate.basis}; early stopping ends sooner, building the model and the test come on top."
    )


def submit(values: Mapping) -> str | None:
    """Queues a run from form values; shows a short error and returns None when a setting is wrong."""
    try:
        config = config_from_settings(values, data_source(), skip_bad_rows())
        return job_manager().submit(config, session_id=session_id(), name=config.name)
    except Exception as exc:
        show_error(exc)
        return None


def submit_pair(values_a: Mapping, values_b: Mapping) -> None:
    """Queues run A then run B; when either has a wrong setting, neither is queued."""
    try:
        source, skip = data_source(), skip_bad_rows()
        configs = []
        for side, values in (("Run A", values_a), ("Run B", values_b)):
            try:
                configs.append(config_from_settings(values, source, skip))
            except ConfigError as exc:
                raise ConfigError(f"{side}: {exc}") from None
        manager = job_manager()
        manager.check_room(session_id(), len(configs))  # both or neither, also under the per-session limit
        ids = [manager.submit(c, session_id=session_id(), name=c.name) for c in configs]
    except Exception as exc:
        show_error(exc)
        return
    st.session_state["compare_runs"] = ids
    st.query_params["runs"] = ",".join(ids)
