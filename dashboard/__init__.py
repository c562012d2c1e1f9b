"""The Streamlit dashboard over the run store: ``streamlit run dashboard/app.py``."""
