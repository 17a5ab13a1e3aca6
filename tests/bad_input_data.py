"""Bad-input rows for the data tools (dataset_tool.py, lt_dataset.py, label files), kept apart from
tests/test_bad_input.py's CASES so that they can grow on their own; docs/bad-input.md lists both.

Each row: (script, arguments, expected message excerpt); tests/test_trust_data.py runs them.
"""

DATA_CASES = []
