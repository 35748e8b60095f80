"""Streamlit stays in the dashboard: only fedlab/dashboard/ (and the page scripts in pages/) import it, and the
one private Streamlit setting the dashboard relies on still behaves as fedlab.dashboard.state expects."""

from pathlib import Path

import fedlab
from tests.helpers import imports_package

DASHBOARD = "dashboard"


def _imports_streamlit(path: Path) -> bool:
    return imports_package(path, "streamlit")


def test_only_the_dashboard_package_imports_streamlit():
    package = Path(fedlab.__file__).parent
    offenders = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.relative_to(package).parts[0] != DASHBOARD and _imports_streamlit(p)
    )
    assert offenders == []


def test_the_scan_sees_both_import_forms(tmp_path):
    plain, dotted, other = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    plain.write_text("def f():\n    import streamlit as st\n")
    dotted.write_text("from streamlit.runtime.pages_manager import PagesManager\n")
    other.write_text("import streamlit_extras\nimport fedlab.dashboard\n")
    assert _imports_streamlit(plain) and _imports_streamlit(dotted) and not _imports_streamlit(other)


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
