"""The dashboard's pages (run by st.navigation in app.py) and their shared helpers: state, sources, settings,
results, comparison, history and presentation."""
