"""Lessons: one federated-learning topic each, with prepared runs, their charts and what to notice."""

import streamlit as st

from fedlab.dashboard import lessons_view, presentation, state
from fedlab.teaching import lessons

state.ensure_navigation()

st.title("Lessons")
all_lessons = lessons.lessons()
store = state.run_store()
states = {lesson.key: lessons.lesson_state(store, lesson) for lesson in all_lessons}
if not presentation.presenting():
    st.markdown(
        "Ten minutes in front of a class: each lesson is a little theory, a reference run and one or two "
        "what-if runs on the synthetic city, and what to notice in their results. Runs already stored "
        "with the same settings are reused; `python -m fedlab lessons --prepare` trains them all ahead."
    )
    lessons_view.lesson_list(all_lessons, states)
lesson = lessons_view.pick_lesson(all_lessons)
lessons_view.lesson_view(lesson, states[lesson.key])
