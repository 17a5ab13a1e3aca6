"""The documentation stays in step with the code: every hook is documented, README commands exist."""

import os
import re

from plugins import hookspecs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_hook_is_in_the_authoring_guide():
    guide = open(os.path.join(REPO, "docs", "plugins.md")).read()
    hooks = [name for name in dir(hookspecs) if name.startswith("gan_")]
    assert len(hooks) >= 15
    for name in hooks:
        assert f"`{name}(" in guide, f"docs/plugins.md does not document {name}"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


def test_readme_scripts_exist():
    readme = open(os.path.join(REPO, "README.md")).read()
    for script in set(re.findall(r"python3? ([\w/]+\.py)", readme)):
        assert os.path.isfile(os.path.join(REPO, script)), script
