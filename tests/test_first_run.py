"""The README's first command as CI runs it (bench/first_run.py), and the machine-fitting defaults."""

import importlib.util
import os
import warnings

import pytest

from training import training_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_first_run():
    spec = importlib.util.spec_from_file_location("first_run", os.path.join(REPO, "bench", "first_run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_commands_are_found_and_need_no_extras():
    first, tests = load_first_run().readme_commands(os.path.join(REPO, "README.md"))
    install = first.split("&&")[0].split()
    assert install[:2] == ["pip", "install"] and install[-2:] == ["-e", "."] and "[" not in first.split("&&")[0]  # No extras.
    assert "train.py" in first and "--metrics=cls_quality" in first  # Prints consistency and the diversity ratio.
    assert tests == 'pip install -e ".[dev]" && ruff check . && python -m pytest -q'


def test_readme_without_commands_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n```bash\n# only a comment\npip install -e .\n```\n")
    with pytest.raises(SystemExit, match="needs two commands"):
        load_first_run().readme_commands(str(readme))


def test_consistency_and_diversity_lines_are_parsed():
    first_run = load_first_run()
    text = "tick 15 ...\nFinal class_consistency: class_consistency = 0.9867 (recorded in x.jsonl)\n"
    assert first_run.CONSISTENCY_RE.findall(text) == ["0.9867"] and first_run.DIVERSITY_RE.findall(text) == []
    text = ("Final cls_quality: class_consistency = 0.9712, div_cls_ratio = 0.8830, div_cls = 3.2100, div_cls_real = 3.6400 "
            "(recorded in x.jsonl)\nFinal samples: grid.png\n")
    assert first_run.CONSISTENCY_RE.findall(text) == ["0.9712"] and first_run.DIVERSITY_RE.findall(text) == ["0.8830"]


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 1), (4, 3), (64, 3)])
def test_dataloader_workers_fit_the_machine(monkeypatch, cpus, workers):
    monkeypatch.setattr(training_config, "available_cpus", lambda: cpus)
    assert training_config.default_num_workers() == workers


def test_default_workers_raise_no_dataloader_warning(tiny_digits):
    """PyTorch warns when num_workers exceeds the usable cores; the default must not trigger it here."""
    import torch

    from training.dataset import ImageFolderDataset

    dataset = ImageFolderDataset(path=tiny_digits, use_labels=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=training_config.default_num_workers())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        next(iter(loader))
