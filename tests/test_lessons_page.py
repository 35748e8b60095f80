"""The Lessons page through AppTest with training faked: it lists the lessons, queues a lesson's runs, reuses
stored runs, and writes the "what to notice" box from the runs' own numbers.
"""

from __future__ import annotations

from fedlab.runs.store import RunStore
from fedlab.teaching.lessons import lesson_by_key, lessons
from tests.helpers import assert_clean
from tests.pages_support import app, db, texts, wait_for_runs  # noqa: F401
from tests.test_lessons import finished


def start_button(at):
    return at.button(key="lesson_btn_start")


def test_the_page_lists_every_lesson_with_its_runs_ready(db):
    at = app("lessons")
    shown = texts(at)
    for lesson in lessons():
        assert f"**{lesson.title}**: 0 of {len(lesson.runs)} runs ready" in shown
    assert "Still training (or not started)" in shown


def test_starting_a_lesson_queues_its_runs_and_the_note_follows_their_numbers(db):
    at = app("lessons")
    at.selectbox(key="lesson_key").select("non_iid").run()
    start_button(at).click().run()
    assert_clean(at)
    runs = wait_for_runs(db, 2)
    lesson = lesson_by_key("non_iid")
    assert {run.config.replace(name="") for run in runs} == {r.config.replace(name="") for r in lesson.runs}
    at.run()
    note = next(i.value for i in at.info if "Look at" in i.value)
    # The fake reports 45.7% for every run: the note says so instead of claiming a gap.
    assert "45.7%" in note and "+0.0 points" in note and "too little to read anything into" in note
    assert "lesson_btn_start" not in {b.key for b in at.button}  # everything stored now


def test_stored_runs_with_equal_settings_are_reused_not_retrained(db):
    lesson = lesson_by_key("participation")
    reference = finished(RunStore(db), lesson.runs[0].config.replace(name="trained from the CLI"), accuracy=0.3)
    at = app("lessons")
    at.selectbox(key="lesson_key").select("participation").run()
    assert "train 2 runs (1 stored, reused)" in start_button(at).label
    start_button(at).click().run()
    runs = wait_for_runs(db, 3)
    assert len(runs) == 3 and sum(run.id == reference for run in runs) == 1


def test_the_note_is_written_from_hand_built_finished_runs(db):
    store = RunStore(db)
    lesson = lesson_by_key("non_iid")
    finished(store, lesson.runs[0].config, accuracy=0.25)
    finished(store, lesson.runs[1].config, accuracy=0.31)
    at = app("lessons")
    note = next(i.value for i in at.info if "Look at" in i.value)
    assert "IID clients reached test acc@1 31.0% against 25.0%" in note and "+6.0 points" in note
    assert "**Non-IID against IID clients**: 2 of 2 runs ready" in texts(at)
    assert len(at.get("plotly_chart")) > 0  # the Compare views show both runs


def test_presentation_mode_shows_the_lesson_without_list_or_button(db):
    at = app("lessons")
    at.sidebar.toggle(key="presentation").set_value(True).run()
    assert_clean(at)
    shown = texts(at)
    assert "Non-IID against IID clients" in shown and "runs ready" not in shown
    assert "lesson_btn_start" not in {b.key for b in at.button}
