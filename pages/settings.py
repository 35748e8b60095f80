"""The training settings form (Train page and both Compare columns), its what-if controls with the live
privacy budget, and turning the form into an ExperimentConfig that is queued.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import streamlit as st

from fedlab.config import GROUPINGS, KNOWN_FEATURES, MODES, OPTIMIZERS, PRESETS, DataConfig, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.privacy import PrivacyBudget
from pages.state import (DataSource, data_source, job_manager, session_id, set_default, show_error,
                         skip_bad_rows)

FEATURE_NAMES = {
    "cat_id": "category of the check-in", "user_id": "who checked in", "latitude": "venue latitude",
    "longitude": "venue longitude", "is_weekend": "weekend or not",
    "clock_sin": "time of day (sin)", "clock_cos": "time of day (cos)",
    "day_sin": "day of month (sin)", "day_cos": "day of month (cos)",
    "month_sin": "month (sin)", "month_cos": "month (cos)",
    "week_day_sin": "weekday (sin)", "week_day_cos": "weekday (cos)",
    "venue_id": "which venue", "orig_cat_id": "fine Foursquare category",
    "user_habits": "where this user went next after this category before (counted on their own device)",
}
GROUPING_NAMES = {"uber": "27 groups of the study", "root": "10 Foursquare top-level categories",
                  "fine": "every Foursquare category"}
FEDADAM = {"client_optimizer": "sgd", "client_lr": 0.3, "server_optimizer": "adam", "server_lr": 0.01}
DP_DEFAULTS = {"dp_clip": 1.0, "dp_noise": 1.0}  # what the DP fields show before anyone turns DP on


# ----- training settings (Train page and both Compare columns) -----

SETTING_FIELDS = ("features", "mode", "n", "rounds", "epochs", "batch_size", "top_users", "clients_per_round",
                  "gru_units", "client_optimizer", "client_lr", "server_optimizer", "server_lr", "seed",
                  "grouping", "patience", "iid", "personalize_epochs", "client_dropout", "dp", "dp_clip", "dp_noise",
                  "name")


def default_settings(preset: str = "central") -> dict:
    """The study's defaults (N 17, 4 local epochs, batch 16, ...) as taken from ExperimentConfig."""
    base = ExperimentConfig()
    return {"features": list(PRESETS[preset]), "mode": base.mode, "n": base.data.n, "rounds": base.rounds,
            "epochs": base.epochs, "batch_size": base.batch_size, "top_users": base.data.top_users,
            "clients_per_round": base.clients_per_round, "gru_units": base.gru_units,
            "client_optimizer": base.client_optimizer, "client_lr": base.client_lr,
            "server_optimizer": base.server_optimizer, "server_lr": base.server_lr, "seed": base.seed,
            "grouping": base.data.grouping, "patience": base.patience, "iid": base.data.iid,
            "personalize_epochs": base.personalize_epochs,
            "client_dropout": base.client_dropout, "dp": base.dp_clip is not None, **DP_DEFAULTS, "name": ""}


def setting_keys(prefix: str) -> list[str]:
    return [f"{prefix}_{field}" for field in SETTING_FIELDS]


def _set_preset(prefix: str, preset: str) -> None:
    st.session_state[f"{prefix}_features"] = list(PRESETS[preset])


def settings_form(prefix: str, *, preset: str = "central", columns: int = 4) -> dict:
    """All training settings as widgets keyed "<prefix>_<field>"; returns their values by field."""
    key = functools.partial("{}_{}".format, prefix)
    for field, value in default_settings(preset).items():
        if field != "features":
            set_default(key(field), value)
    # The preset is the widget's own default, not only a session-state value: a multiselect whose default
    # is [] can show and send back [] when the browser draws it before the value arrives.
    first = key("features") not in st.session_state
    st.multiselect("Input features", list(KNOWN_FEATURES), default=list(PRESETS[preset]) if first else None,
                   key=key("features"),
                   help="What the GRU sees about each past check-in; it always predicts the category of the "
                        "next one. " + "; ".join(f"**{f}**: {FEATURE_NAMES[f]}" for f in KNOWN_FEATURES) + ".")
    with st.container(horizontal=True):
        st.button("Central preset", key=key("btn_central"), on_click=_set_preset, args=(prefix, "central"),
                  help="Category plus the 8 cyclic time features (the study's central model).")
        st.button("Biggest preset", key=key("btn_biggest"), on_click=_set_preset, args=(prefix, "biggest"),
                  help="Every feature of the study, including user, venue and position.")
        st.button("Habits preset", key=key("btn_habits"), on_click=_set_preset, args=(prefix, "habits"),
                  help="Biggest plus each user's own habits: the shares of categories they went to next after "
                       "this one, counted from their earlier check-ins on their own device.")
    cells = _grid(columns, 8)
    _number_input(next(cells), "Sequence length N (check-ins)", min_value=2, max_value=500, step=1, key=key("n"),
                  help="Check-ins per sequence: the GRU reads N-1 and predicts the next category "
                       "after each. The study used 17.")
    _number_input(next(cells), "Rounds", min_value=1, max_value=1000, step=1, key=key("rounds"),
                  help="Most federated rounds (epochs when centralized). Training stops earlier "
                       "when the validation loss has not improved for 'patience' rounds.")
    _number_input(next(cells), "Local epochs per round", min_value=1, max_value=100, step=1, key=key("epochs"),
                  help="Passes each client makes over its own data before sending its update. "
                       "The study used 4.")
    _number_input(next(cells), "Batch size (sequences)", min_value=1, max_value=4096, step=1, key=key("batch_size"),
                  help="Sequences per gradient step on a client. The study used 16.")
    _number_input(next(cells), "Users (clients)", min_value=1, max_value=100_000, step=1, key=key("top_users"),
                  help="The K users with the most check-ins; each becomes one federated client. "
                       "Fewer users train faster.")
    _number_input(next(cells), "Clients per round", min_value=1, max_value=100_000, step=1, value=None,
                  key=key("clients_per_round"), placeholder="all",
                  help="How many clients the server samples each round. Empty = all of them.")
    _number_input(next(cells), "GRU units", min_value=1, max_value=2048, step=1, key=key("gru_units"),
                  help="Size of the GRU's memory. 256 as in the study; 8–32 trains in seconds "
                       "for a demo.")
    next(cells).radio("Training mode", list(MODES), key=key("mode"), horizontal=True,
                      format_func={"federated": "federated (FedAvg)", "centralized": "centralized"}.get,
                      help="Federated: data stays with each client and only model updates travel. "
                           "Centralized: the same model trained on all check-ins pooled (a reference point).")
    with st.expander("Optimizers, seed and more · what if (dropout, privacy)"):
        _advanced_settings(key, columns)
        _what_if_settings(key)
    st.text_input("Run name (optional)", key=key("name"), max_chars=80,
                  help="Shown in the run list and on charts. Empty = made from the settings.")
    return {field: st.session_state[key(field)] for field in SETTING_FIELDS}


def _number_input(cell, label: str, *, key: str, min_value, max_value, **kwargs):
    """cell.number_input that survives a session value outside its limits.

    The browser never sends one, but Streamlit raises on such a value at every rerun, which would leave the
    page broken for the rest of the session; the value is put back in range instead, with a message.
    """
    value = st.session_state.get(key)
    kind = type(min_value)  # int or float, as the widget's limits
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if value is not None and not (number and min_value <= value <= max_value and kind(value) == value):
        if number:
            st.session_state[key] = kind(min(max(value, min_value), max_value))
        else:
            del st.session_state[key]  # the widget starts again from its lowest value
        fixed = st.session_state.get(key, min_value)
        cell.error(f"{label} must be between {min_value:,} and {max_value:,}, not {value!r}; it is now {fixed!r}. "
                   "Check it, then press Run.", icon=":material/error:")
    return cell.number_input(label, key=key, min_value=min_value, max_value=max_value, **kwargs)


def _grid(columns: int, count: int):
    """`count` cells filled row by row across `columns` columns (widgets keep their reading order)."""
    cols = st.columns(columns)
    return iter([cols[i % columns] for i in range(count)])


def _use_fedadam(key: Callable[[str], str]) -> None:
    for field, value in FEDADAM.items():
        st.session_state[key(field)] = value


def _advanced_settings(key: Callable[[str], str], columns: int) -> None:
    st.button("FedAdam optimizers (for real data)", key=key("btn_fedadam"), on_click=_use_fedadam, args=(key,),
              help="Plain SGD 0.3 on the clients, Adam 0.01 on the server. On the real check-ins this trains far "
                   "better than the defaults (client Adam), whose clients drift apart; it needs more rounds, so "
                   "the quick synthetic demos keep the defaults.")
    cells = _grid(min(columns, 3), 9)
    next(cells).selectbox("Client optimizer", list(OPTIMIZERS), key=key("client_optimizer"),
                          help="Optimizer of the local training on each client (and of centralized training).")
    _number_input(next(cells), "Client learning rate", min_value=0.0, max_value=10.0, step=0.001, format="%.4f",
                  key=key("client_lr"), help="Step size of the client optimizer; must be above 0.")
    _number_input(next(cells), "Random seed", min_value=0, max_value=2**31 - 1, step=1, key=key("seed"),
                  help="Same seed + same settings = the same run (initial model, client sampling).")
    next(cells).selectbox("Server optimizer", list(OPTIMIZERS), key=key("server_optimizer"),
                          help="How the server applies the averaged update. SGD with rate 1.0 = plain FedAvg.")
    _number_input(next(cells), "Server learning rate", min_value=0.0, max_value=100.0, step=0.1, format="%.3f",
                  key=key("server_lr"), help="Step size of the server optimizer; must be above 0.")
    _number_input(next(cells), "Patience (rounds)", min_value=1, max_value=1000, step=1, key=key("patience"),
                  help="Stop after this many rounds without a lower validation loss.")
    next(cells).selectbox("Category grouping", list(GROUPINGS), key=key("grouping"),
                          format_func=lambda g: f"{g} · {GROUPING_NAMES[g]}",
                          help="Which classes the model predicts.")
    next(cells).checkbox("IID clients", key=key("iid"),
                         help="Deal the sequences to clients at random (same sizes). Removes the clients' "
                              "differences, to see how much non-IID data costs.")
    _number_input(next(cells), "Fine-tune epochs before test", min_value=0, max_value=50, step=1,
                  key=key("personalize_epochs"),
                  help="Personalisation: before the test, each client trains the final shared model for this many "
                       f"epochs on its own earlier check-ins (plain SGD, rate {ExperimentConfig().personalize_lr:g}) and is "
                       "scored with that. "
                       "Reported beside the shared model's accuracy. 0 = off.")


def _what_if_settings(key: Callable[[str], str]) -> None:
    """Client dropout and differential privacy, with the privacy budget they give (federated runs only)."""
    st.markdown("**What if…** (federated runs only)")
    cells = _grid(2, 4)  # dropout beside the DP switch, the two DP numbers below them
    _number_input(next(cells), "Client dropout (share failing)", min_value=0.0, max_value=0.95, step=0.05,
                  format="%.2f", key=key("client_dropout"),
                  help="Probability that a sampled client fails to send its update (a phone goes offline). "
                       "0 = every sampled client reports.")
    dp = next(cells).checkbox("Differential privacy", key=key("dp"),
                              help="DP-FedAvg: clip each client's update and add Gaussian noise to their sum, so "
                                   "the model reveals little about any one user. Costs accuracy.")
    _number_input(next(cells), "DP clipping norm", min_value=0.0, max_value=100.0, step=0.1, format="%.2f",
                  key=key("dp_clip"), disabled=not dp,
                  help="Each client's update is scaled down to at most this length (L2 norm); must be above 0.")
    _number_input(next(cells), "DP noise multiplier", min_value=0.0, max_value=100.0, step=0.1, format="%.2f",
                  key=key("dp_noise"), disabled=not dp,
                  help="Noise added to the sum of updates, in units of the clipping norm. More noise = more "
                       "private, less accurate.")
    if dp:
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
    st.info(budget_text(budget, rounds=int(rounds), clients_per_round=per_round, total_clients=int(users)),
            icon=":material/lock:")


@st.cache_data(show_spinner="Computing the privacy budget…", max_entries=256)
def privacy_budget(noise: float, clients_per_round: int | None, total_clients: int, rounds: int) -> PrivacyBudget:
    from fedlab.privacy import dp_epsilon  # loads dp_accounting (and scipy) only when DP is turned on

    return dp_epsilon(noise_multiplier=noise, clients_per_round=clients_per_round, total_clients=total_clients,
                      rounds=rounds)


def budget_text(budget: PrivacyBudget, *, rounds: int, clients_per_round: int | None, total_clients: int) -> str:
    """One paragraph: epsilon at a stated delta, for how many rounds and clients, and how to read it."""
    sampled = total_clients if clients_per_round is None else min(clients_per_round, total_clients)
    setting = (f"{sampled:,} of {total_clients:,} clients a round, every one of the {total_clients:,} users "
               "counted as a client")
    if math.isinf(budget.epsilon):
        return (f"Privacy budget if all {rounds} rounds run: **ε = ∞** ({setting}). Without noise, clipping alone "
                "promises no privacy; raise the noise multiplier.")
    reading = ("strong" if budget.epsilon <= 1 else "moderate" if budget.epsilon <= 10
               else "weak — above about 10 it promises little")
    return (f"Privacy budget if all {rounds} rounds run: **ε = {budget.epsilon:,.2f} at δ = {budget.delta:.1e}** "
            f"per user ({setting}). Smaller ε is more private; this is {reading}. Early stopping spends less.")


def _what_if(values: Mapping) -> dict:
    """The config fields of the what-if controls; DP off leaves the clipping norm and noise unset."""
    dp = bool(values.get("dp", False))
    return {"client_dropout": values.get("client_dropout", 0.0),
            "dp_clip": values.get("dp_clip") if dp else None,
            "dp_noise": values.get("dp_noise", 0.0) if dp else 0.0}


def config_from_settings(values: Mapping, source: DataSource, skip: bool) -> ExperimentConfig:
    """An ExperimentConfig from a settings form; ConfigError (one line) when a value is not allowed."""
    chosen = set(values["features"])
    data = DataConfig(data=source.path, grouping=values["grouping"], top_users=values["top_users"],
                      n=values["n"], skip_bad_rows=skip, iid=bool(values["iid"]), seed=values["seed"])
    return ExperimentConfig(
        # Known features in the study's order; an unknown name is kept so the config refuses it by name.
        data=data, features=tuple(f for f in KNOWN_FEATURES if f in chosen)
        + tuple(f for f in values["features"] if f not in KNOWN_FEATURES), mode=values["mode"],
        rounds=values["rounds"], patience=values["patience"], epochs=values["epochs"],
        batch_size=values["batch_size"], clients_per_round=values["clients_per_round"],
        client_optimizer=values["client_optimizer"], client_lr=values["client_lr"],
        server_optimizer=values["server_optimizer"], server_lr=values["server_lr"],
        gru_units=values["gru_units"], seed=values["seed"], name=(values.get("name") or "").strip(),
        personalize_epochs=values.get("personalize_epochs", 0),
        **_what_if(values),
        workers=tuple(w.strip() for w in (values.get("workers") or "").split(",") if w.strip()))


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
        ids = [manager.submit(c, session_id=session_id(), name=c.name) for c in configs]
    except Exception as exc:
        show_error(exc)
        return
    st.session_state["compare_runs"] = ids
    st.query_params["runs"] = ",".join(ids)
