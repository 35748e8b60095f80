"""The one private Streamlit setting the dashboard relies on still behaves as fedlab.dashboard.state expects."""


def test_a_pages_folder_still_sets_the_flag_ensure_navigation_clears(tmp_path, monkeypatch):
    # fedlab.dashboard.state.ensure_navigation reads and resets PagesManager.uses_pages_directory, which a fresh
    # server sets when a pages/ folder sits beside the main script. If Streamlit renames or drops it, this fails.
    from streamlit.runtime.pages_manager import PagesManager

    assert "uses_pages_directory" in vars(PagesManager)
    main = tmp_path / "app.py"
    main.write_text("")
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)  # as in a fresh server process
    PagesManager(str(main))
    assert PagesManager.uses_pages_directory is False
    (tmp_path / "pages").mkdir()
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(str(main))
    assert PagesManager.uses_pages_directory is True
