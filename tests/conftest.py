"""Shared fixtures: the tiny CPU trainer and a digits dataset (plugins/testing.py)."""

pytest_plugins = ["plugins.testing"]
