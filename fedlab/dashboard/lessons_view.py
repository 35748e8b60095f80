"""The Lessons page's views: the list of lessons, one lesson's theory, its runs (queued on a press, stored ones
reused), their charts through the Compare views, and the "what to notice" box from the runs' numbers.
"""

from __future__ import annotations

import streamlit as st

from fedlab.dashboard import comparison
from fedlab.dashboard.presentation import presenting
from fedlab.dashboard.state import job_manager, run_store, session_id, show_error
from fedlab.errors import FedlabError
from fedlab.runs.store import Run
from fedlab.teaching import lessons as lesson_data
from fedlab.teaching.lessons import Lesson

KEY = "lesson_key"
# Presentation mode: the lesson's own words (theory and note) larger still than the page's enlarged text.
BIG_TEXT_CSS = """<style>
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { font-size: 1.35rem; }
</style>"""


def kept_keys() -> list[str]:
    """The chosen lesson, kept across pages by app.py."""
    return [KEY]


def lesson_list(all_lessons: list[Lesson], states: dict[str, dict[str, Run | None]]) -> None:
    """One line per lesson: its title and how many of its runs are ready."""
    lines = []
    for lesson in all_lessons:
        ready = sum(1 for run in states[lesson.key].values() if run is not None and run.status == "finished")
        lines.append(f"- **{lesson.title}**: {ready} of {len(lesson.runs)} runs ready")
    st.markdown("\n".join(lines))
    pending = lesson_data.pending_topics()
    if pending:
        st.caption("To come once their settings exist: " + "; ".join(pending) + ".")


def pick_lesson(all_lessons: list[Lesson]) -> Lesson:
    keys = [lesson.key for lesson in all_lessons]
    if st.session_state.get(KEY) not in keys:
        st.session_state[KEY] = keys[0]
    if not presenting():  # the lesson stays the one chosen before
        titles = {lesson.key: lesson.title for lesson in all_lessons}
        st.selectbox("Lesson", keys, key=KEY, format_func=titles.get)
    return next(lesson for lesson in all_lessons if lesson.key == st.session_state[KEY])


def lesson_view(lesson: Lesson, state: dict[str, Run | None]) -> None:
    """Theory, the runs and their state, the start button, the note, then the charts."""
    if presenting():
        st.html(BIG_TEXT_CSS)
    st.header(lesson.title)
    st.markdown(lesson.theory)
    _run_lines(lesson, state)
    if not presenting():
        _start_button(lesson, state)
    numbers = lesson_data.lesson_numbers(run_store(), lesson, state)
    st.subheader("What to notice")
    note = lesson_data.what_to_notice(lesson, numbers)
    st.info(note, icon=":material/lightbulb:")
    run_ids = list(dict.fromkeys(run.id for run in state.values() if run is not None))  # a shared run once
    if run_ids:
        st.divider()
        comparison.compare_panel(run_ids)


def _run_lines(lesson: Lesson, state: dict[str, Run | None]) -> None:
    lines = []
    for entry in lesson.runs:
        run = state.get(entry.label)
        where = "not trained yet" if run is None else _state_text(run)
        role = "reference" if entry is lesson.runs[0] else "what if"
        lines.append(f"- {role}: **{entry.label}**: {where}")
    st.markdown("\n".join(lines))


def _state_text(run: Run) -> str:
    if run.status == "finished" and run.test:
        return f"stored (test acc@1 {run.test['accuracy']:.1%})"
    return {"queued": "queued", "running": "training", "testing": "testing"}.get(run.status, run.status)


def _start_button(lesson: Lesson, state: dict[str, Run | None]) -> None:
    missing = lesson_data.runs_to_queue(state, lesson)
    if not missing:
        st.caption("Every run of this lesson is stored or training; nothing to queue.")
        return
    stored = len(lesson.runs) - len(missing)
    reuse = f" ({stored} stored, reused)" if stored else ""
    if st.button(
        f"Start the lesson: train {len(missing)} run{'s' if len(missing) != 1 else ''}{reuse}",
        type="primary",
        key="lesson_btn_start",
        icon=":material/play_arrow:",
        help="Queues the runs this lesson has no stored results for; they train one after the other.",
    ):
        try:
            queue_runs(missing)
        except FedlabError as exc:
            show_error(exc)
            return
        st.rerun()


def queue_runs(runs: list[lesson_data.LessonRun]) -> list[str]:
    """Queues the runs for this session; refuses (FedlabError) before queuing any when they would not all fit."""
    manager, session = job_manager(), session_id()
    manager.check_room(session, len(runs))
    return [manager.submit(run.config, session_id=session, name=run.config.name) for run in runs]
