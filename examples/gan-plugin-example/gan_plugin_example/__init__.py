"""Example plugin package for the gan-plugins trainer (see plugin.py)."""
