"""The trainer's plugin-test fixtures (tiny_trainer, tiny_digits) come from plugins.testing."""

pytest_plugins = ["plugins.testing"]
