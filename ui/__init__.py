"""The analyst's search page (Streamlit): `glb ui --index DIR`. Uses the engine's public API only."""
