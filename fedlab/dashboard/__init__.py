"""The dashboard's shared helpers, used by the page scripts in pages/ and by app.py: state, sources, settings,
results, comparison, history, presentation and access. The only part of fedlab that imports streamlit."""
