"""Experiment configs: `get_config()` per file, derived from base.py."""
