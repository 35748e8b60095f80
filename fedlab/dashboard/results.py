"""Views of runs: the one-line settings summary, status and progress, live curves, test results beside the
baselines, per-category details, fairness across clients, what an attack or defence did beside the clean
reference, and the "what this round did" panel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import pandas as pd
import streamlit as st

from fedlab.config import ExperimentConfig
from fedlab.dashboard import access, queue_view
from fedlab.dashboard.importance_view import importance_section, who_helps
from fedlab.dashboard.presentation import presenting, show_chart
from fedlab.dashboard.state import POLL_SECONDS, job_manager, run_store, session_id, show_error
from fedlab.results import attack_view, charts, fairness
from fedlab.results.explain import round_explanation
from fedlab.results.metrics_table import best_baseline, metrics_table, num, pct
from fedlab.results.settings_text import describe
from fedlab.runs.store import ACTIVE_STATUSES, Run, RunStore

STATUS_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/play_arrow:",
    "testing": ":material/fact_check:",
    "finished": ":material/check_circle:",
    "stopped": ":material/stop_circle:",
    "failed": ":material/error:",
    "interrupted": ":material/warning:",
}
FAIRNESS_COLUMNS = {
    "client": st.column_config.TextColumn("client", help="The user's id in the data."),
    "accuracy": st.column_config.NumberColumn(
        "test accuracy", format="percent", help="acc@1 on this client's own test check-ins."
    ),
    "examples": st.column_config.NumberColumn("targets", help="Test targets scored for this client."),
    "checkins": st.column_config.NumberColumn(
        "check-ins", help="All of the client's check-ins (train, validation and test)."
    ),
}


# ----- describing runs -----


def settings_summary(config: ExperimentConfig) -> str:
    """One line of a run's settings, e.g. "central · federated · 10 rounds · ... · IID clients"."""
    return describe(config)


def best_val_accuracy(rounds: pd.DataFrame) -> float | None:
    return float(rounds["val_accuracy"].max()) if len(rounds) else None


def run_labels(runs: list[Run]) -> dict[str, str]:
    """Run id -> a label unique among `runs` (the name, with a short id when two names are equal)."""
    names = [run.name for run in runs]
    return {run.id: run.name if names.count(run.name) == 1 else f"{run.name} [{run.id[:6]}]" for run in runs}


def results_table(
    runs: Mapping[str, Run], rounds: Mapping[str, pd.DataFrame], clean: Mapping[str, Run | None] | None = None
) -> pd.DataFrame:
    """Final metrics of each run (columns) with the baselines of its own test data, as display text; `clean`
    (label -> the run's clean reference, see clean_references) adds its figures to attacked or defended runs."""
    return metrics_table(
        {label: run.test for label, run in runs.items()},
        {label: run.baselines for label, run in runs.items()},
        rounds,
        configs={label: run.config for label, run in runs.items()},
        clean={label: ref.test for label, ref in (clean or {}).items() if ref is not None},
    )


def clean_references(runs: Mapping[str, Run]) -> dict[str, Run | None]:
    """Label -> the stored clean reference (or None) of each run with malicious clients or a defence."""
    store = run_store()
    return {
        label: attack_view.clean_reference(store, run.config)
        for label, run in runs.items()
        if attack_view.attacked_or_defended(run.config)
    }


_pct, _num = pct, num


def progress_line(run: Run, rounds: pd.DataFrame) -> tuple[float, str]:
    """(fraction done, text) for a running run: rounds done of the most, and a time-left estimate."""
    done, most = len(rounds), run.config.rounds
    if done == 0:
        return 0.0, "Preparing the data and building the model (the first run takes longest)…"
    left = max(most - done, 0) * float(rounds["seconds"].mean())
    return min(done / most, 1.0), f"Round {done} of at most {most} · about {_duration(left)} left"


def testing_line(run: Run, rounds: pd.DataFrame) -> str:
    """What a run does between its last round and its results."""
    best = rounds.loc[rounds["is_best"].astype(bool), "round"]  # the engine marks each new lowest validation loss
    kept = f" (round {int(best.iloc[-1])})" if len(best) else ""
    text = f"Rounds done. Testing the kept model{kept} on every test sequence"
    if epochs := run.config.personalize_epochs:
        text += f", then again after each client fine-tunes it for {epochs} epochs on its own earlier check-ins"
    return text + "…"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----- run views -----


def reference_rounds(store: RunStore, exclude: set[str]) -> tuple[str, pd.DataFrame] | None:
    """The pinned reference run's (name, rounds), unless it is one of the runs already shown."""
    ref_id = store.reference()
    if ref_id is None or ref_id in exclude:
        return None
    run = store.get_run(ref_id)
    return None if run is None else (run.name, store.rounds(ref_id))


def run_panel(run_id: str, *, narrow: bool = False, explain: bool = False) -> None:
    """A run's status, curves and results; refreshes every second while it is queued or running.

    `narrow` stacks the charts, for a panel beside the settings; `explain` adds what the latest round did.
    """
    run = run_store().get_run(run_id)
    if run is None:
        st.info("That run no longer exists (it was deleted). Start a new one above.")
        return
    if run.is_active:
        st.fragment(run_every=POLL_SECONDS)(_live_run)(run_id, narrow, explain)
    else:
        _run_view(run, run_store().rounds(run_id), live=False, narrow=narrow, explain=explain)


def _live_run(run_id: str, narrow: bool, explain: bool) -> None:
    store = run_store()
    run = store.get_run(run_id)
    if run is None or not run.is_active:
        st.rerun()  # it ended: redraw the whole page once, without polling, with the results
    try:
        _run_view(run, store.rounds(run_id), live=True, narrow=narrow, explain=explain)
    except Exception as exc:  # a fragment would otherwise show a traceback
        show_error(exc)


def _run_view(run: Run, rounds: pd.DataFrame, *, live: bool, narrow: bool, explain: bool) -> None:
    st.subheader(run.name)
    st.caption(settings_summary(run.config))
    status_line(run, rounds)
    if run.can_stop:
        stop_button(run.id)
    colors = charts.distinct_colors([run.name])
    draw = functools.partial(
        curves,
        {run.name: rounds},
        max_rounds=run.config.rounds,
        colors=colors,
        reference=reference_rounds(run_store(), {run.id}),
        key=f"run_{run.id}_{live}",
        defended=(run.name,) if run.config.defense != "none" else (),
    )
    if not explain:
        draw(narrow=narrow)
    elif narrow:  # no room beside stacked charts: the panel goes right above them
        explain_panel(run, rounds)
        draw(narrow=True)
    else:
        left, right = st.columns([3, 2], gap="medium")
        with left:
            draw(narrow=True)
        with right:
            explain_panel(run, rounds)
    if run.test:
        show_test_results(run, colors=colors, key=f"run_{run.id}", narrow=narrow)


def status_line(run: Run, rounds: pd.DataFrame) -> None:
    done = len(rounds)
    if run.status == "queued":
        st.info(queue_view.queued_line(run.id), icon=STATUS_ICONS["queued"])
    elif run.status == "running":
        fraction, text = progress_line(run, rounds)
        st.progress(fraction, text=text)
    elif run.status == "testing":
        st.progress(1.0, text=testing_line(run, rounds))
    elif run.status == "finished":
        early = done < run.config.rounds
        st.success(
            f"Finished after {done} round(s)"
            + (f", stopped early: no better validation loss for {run.config.patience} rounds." if early else ".")
            + " Test results use the round with the lowest validation loss."
        )
    elif run.status == "stopped":
        st.warning(
            f"Stopped after {done} round(s); the rounds so far are kept"
            + (" and the kept model was tested." if run.test else ".")
        )
    elif run.status == "failed":
        st.error(f"The run failed: {run.error or 'no reason recorded'}", icon=":material/error:")
    elif run.status == "interrupted":
        st.warning(
            f"Interrupted after {done} round(s): the app stopped while it trained. Start it again "
            "from the Train page if you need it."
        )


def stop_button(run_id: str) -> None:
    """Stop, for a run this app trains or queues and this session may change; else a caption why not."""
    run = run_store().get_run(run_id)
    if run is None:
        return
    if not job_manager().is_active(run_id):
        st.caption("Not trained by this app (a `fedlab run` in a terminal): stop it there with Ctrl-C.")
    elif not access.can_change(run):
        access.read_only_caption(run)
    elif st.button("Stop", key=f"stop_{run_id}", help="Ends the run after the current round; its rounds are kept."):
        job_manager().stop(run_id)
        st.toast("Stopping after the current round…")


def curves(
    runs: Mapping[str, pd.DataFrame],
    *,
    max_rounds: int | None,
    colors: Mapping[str, str],
    reference: tuple[str, pd.DataFrame] | None,
    key: str,
    narrow: bool = False,
    defended: tuple[str, ...] = (),
) -> None:
    """Loss and accuracy per round (side by side, or stacked when narrow), with how to read them; then the
    communication charts of federated runs, and what the defence did per round for the `defended` labels."""
    if not any(len(r) for r in runs.values()):
        return
    places = (st.container(), st.container()) if narrow else st.columns(2)
    for column, metric in zip(places, ("loss", "accuracy")):
        fig = charts.learning_curves(runs, metric, reference=reference, colors=colors, max_rounds=max_rounds)
        show_chart(fig, key=f"{key}_{metric}", place=column)
    st.caption(
        "Dashed: training (average over the clients' local steps); solid: validation (each client's "
        "held-out later check-ins). Accuracy = share of next check-ins whose category was predicted "
        "right." + (" Faint: the pinned reference run." if reference else "")
    )
    if charts.sends_bytes(runs):
        places = (st.container(), st.container()) if narrow else st.columns(2)
        show_chart(charts.megabytes_per_round(runs, colors=colors), key=f"{key}_megabytes", place=places[0])
        show_chart(charts.accuracy_vs_megabytes(runs, colors=colors), key=f"{key}_per_megabyte", place=places[1])
        st.caption(
            "Communication: down = the model sent to each sampled client; up = each reporting client's "
            "update after compression (its encoded size under the aggregator's settings)."
        )
    if defended := {label: runs[label] for label in defended if len(runs.get(label, ()))}:
        show_chart(charts.defence_counts(defended, colors=colors), key=f"{key}_defence")
        st.caption(
            "Counted by the defence's own aggregator each round: updates scaled down to its clipping norm, and "
            "updates dropped for being far longer than the others (zeroed)."
        )


def show_test_results(run: Run, *, colors: Mapping[str, str], key: str, narrow: bool = False) -> None:
    """Test metrics of one run beside its baselines (metrics, table, bar chart) and the per-client spread."""
    test, base = run.test or {}, run.baselines or {}
    best_base = best_baseline(base)
    cols = st.columns(4)
    cols[0].metric(
        "acc@1",
        _pct(test.get("accuracy")),
        delta=None if best_base is None else f"{(test['accuracy'] - best_base) * 100:+.1f} pts",
        help="Share of test targets whose category was the model's first guess. Below: how many "
        "percentage points above (or below) the best baseline.",
    )
    cols[1].metric("acc@5", _pct(test.get("top5_accuracy")), help="Share whose category was among the top 5 guesses.")
    cols[2].metric("MRR", _num(test.get("mrr")), help="Mean reciprocal rank of the true category (1 = always first).")
    cols[3].metric("test loss", _num(test.get("loss")), help="Cross-entropy on the test targets, in nats.")
    if tuned := test.get("personalized"):
        st.caption(personalized_text(tuned, best_base))
    clean = clean_references({run.name: run})
    left, right = (st.container(), st.container()) if narrow else st.columns([2, 3])
    left.table(results_table({run.name: run}, {run.name: run_store().rounds(run.id)}, clean))
    fig = charts.metrics_vs_baselines({run.name: test.get("accuracy", 0.0)}, base, colors=colors)
    show_chart(fig, key=f"{key}_baselines", place=right)
    st.caption(
        "Baselines are simple predictors scored on exactly the same test targets. A model that does not "
        "beat 'Repeat last category' or the Markov chains has learned little."
    )
    importance_section({run.name: test}, colors=colors, key=key)
    attack_results({run.name: run}, clean, colors=colors, key=key)
    if test.get("per_client"):
        show_chart(charts.per_client_accuracy({run.name: test}, colors=colors), key=f"{key}_clients")
        st.caption(
            "Each client's own test accuracy. A wide spread means the shared model suits some people far "
            "better than others (their data differ: non-IID)."
        )
        fairness_view({run.name: test}, colors=colors, key=key)


def personalized_text(tuned: Mapping, best_baseline: float | None) -> str:
    gain = ""
    if best_baseline is not None:
        gain = f" ({(tuned['accuracy'] - best_baseline) * 100:+.1f} pts against the best baseline)"
    return (
        f"**Personalised:** after {tuned['epochs']} epochs of fine-tuning on each client's own earlier check-ins, "
        f"acc@1 {tuned['accuracy']:.1%}{gain}, acc@5 {tuned['top5_accuracy']:.1%}, MRR {tuned['mrr']:.3f}. "
        "Each user's phone would adapt the shared model to its owner; the data still never leaves it."
    )


def attack_results(
    runs: Mapping[str, Run], clean: Mapping[str, Run | None], *, colors: Mapping[str, str], key: str
) -> None:
    """For the runs with a clean reference to compare with (the keys of `clean`): their accuracy for all and for
    the honest clients beside the clean run's, the targeted attack's success, and a line (with a button that
    queues it) for each run whose clean reference is not stored."""
    figures = {
        label: attack_view.attack_figures(runs[label].test, ref.test if ref else None)
        for label, ref in clean.items()
        if runs[label].test
    }
    if not figures:
        return
    st.markdown("**Attack and defence, beside the clean reference**")
    show_chart(charts.attack_accuracy(figures, colors=colors), key=f"{key}_attack")
    if any(attack_view.SUCCESS in frame.index for frame in figures.values()):
        show_chart(charts.targeted_success(figures, colors=colors), key=f"{key}_targeted")
    st.caption(
        "The clean reference is a finished run with the same settings and seed but no malicious clients and no "
        "defence (faint bars), scored on the same clients. Honest clients: those that did not poison their data."
    )
    for label in figures:
        if clean[label] is None:
            _missing_clean_reference(runs[label], label=label, key=key)


def _missing_clean_reference(run: Run, *, label: str, key: str) -> None:
    """One line saying the clean reference is not stored (or is training), with a button that queues it."""
    store = run_store()
    training = attack_view.find_clean_reference(store.list_runs(statuses=ACTIVE_STATUSES), run.config)
    if training is not None:
        st.caption(f"{label}: its clean reference is {training.status} (run {training.id}); its bars follow.")
        return
    line, button = st.columns([3, 1], vertical_alignment="center")
    line.caption(f"{label}: no clean reference is stored (same settings, no malicious clients, no defence).")
    if presenting():
        return
    if button.button("Train it", key=f"{key}_clean_{run.id}", icon=":material/play_arrow:", help=QUEUE_CLEAN_HELP):
        try:
            config = attack_view.clean_config(run.config, name=f"{run.name} · clean reference")
            job_manager().submit(config, session_id=session_id(), name=config.name)
        except Exception as exc:
            show_error(exc)
            return
        st.rerun()


QUEUE_CLEAN_HELP = "Queues a run with the same settings and seed, without malicious clients or a defence."


def class_details(reports: Mapping[str, Mapping], *, colors: Mapping[str, str], key: str) -> None:
    """Per-class accuracy of the reports together, then one confusion matrix per report."""
    reports = {label: r for label, r in reports.items() if r}
    if not reports:
        return
    show_chart(charts.per_class_recall(reports, colors=colors), key=f"{key}_class")
    st.caption(
        "For each true category: the share of its test targets predicted right. Rare categories are usually "
        "hard; a model that only learns the common ones scores 0 on the rest."
    )
    for column, (label, report) in zip(st.columns(len(reports)), reports.items()):
        show_chart(
            charts.confusion_heatmap(report, title=f"Confusion: {label}"), key=f"{key}_confusion_{label}", place=column
        )
    st.caption(
        "Rows: the true category; columns: what the model predicted; each row sums to 100%. "
        "A strong diagonal is good; a bright column is a category the model guesses too often."
    )


# ----- fairness and the round explained -----


def fairness_view(reports: Mapping[str, Mapping], *, colors: Mapping[str, str], key: str) -> None:
    """Best and worst served clients of each report with their check-ins, then accuracy against data size."""
    tables = {
        label: fairness.client_table(report["per_client"])
        for label, report in reports.items()
        if report and report.get("per_client")
    }
    if not tables:
        return
    st.markdown("**Fairness: who is served well, who is not**")
    for number, (column, (label, table)) in enumerate(zip(st.columns(len(tables)), tables.items())):
        best, worst = fairness.best_and_worst(table)
        with column:
            if len(tables) > 1:
                st.markdown(f"*{label}*")
            for title, rows in (("Best served", best), ("Worst served", worst)):
                if len(rows):
                    st.caption(title)
                    st.dataframe(
                        rows,
                        hide_index=True,
                        column_config=FAIRNESS_COLUMNS,
                        key=f"{key}_fair_{title.split()[0].lower()}_{number}",
                    )
            st.caption(fairness.correlation_text(table))
    show_chart(charts.accuracy_vs_checkins(tables, colors=colors), key=f"{key}_fairness")
    st.caption(
        "Each dot is one client; check-ins count all of its check-ins (train, validation and test). If "
        "the dots climb to the right, users with little data are served worse."
    )
    who_helps(reports, colors=colors, key=key)


def explain_panel(run: Run, rounds: pd.DataFrame) -> None:
    """What the latest round did, step by step, with its figures (a bordered box)."""
    latest = rounds.iloc[-1] if len(rounds) else None
    total = run.extra.get("train_clients")
    with st.container(border=True):
        st.markdown("**Explained: one round**" if run.config.mode == "federated" else "**Explained: one epoch**")
        st.markdown(round_explanation(run.config, latest, total_clients=total if isinstance(total, int) else None))
