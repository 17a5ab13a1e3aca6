"""dnnlib.util and torch_utils.persistence / training_stats / misc."""

import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import dnnlib
from dnnlib import util
from torch_utils import misc, training_stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_easydict_and_names():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {"a": 1, "b": 2} and d.a == 1
    with pytest.raises(AttributeError):
        _ = d.missing
    assert type(pickle.loads(pickle.dumps(d))) is dnnlib.EasyDict
    assert pickle.dumps(d).find(b"dnnlib.util") >= 0  # Pickled under NVIDIA's module path.
    assert util.get_obj_by_name("torch.nn.Linear") is torch.nn.Linear
    lin = util.construct_class_by_name(2, 3, class_name="torch.nn.Linear")
    assert lin.weight.shape == (3, 2)
    assert util.call_func_by_name(4, func_name="math.sqrt") == 2
    assert util.format_time(5) == "5s" and util.format_time(65) == "1m 05s" and util.format_time(3723) == "1h 02m 03s"
    assert util.format_time(90061) == "1d 01h 01m"


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(tmp_path))
    assert util.make_cache_dir_path("downloads") == os.path.join(str(tmp_path), "downloads")


def test_open_url_local_and_file_urls(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello")
    with util.open_url(str(path)) as f:
        assert f.read() == b"hello"
    with util.open_url("file://" + str(path)) as f:
        assert f.read() == b"hello"
    assert util.open_url(str(path), return_filename=True) == str(path)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        util.open_url(str(tmp_path / "nope.bin"))


def test_open_url_uses_cache_without_network(tmp_path):
    url = "https://example.invalid/some/detector.pt"
    cached = tmp_path / util.url_cache_name(url)
    cached.write_bytes(b"cached")
    with util.open_url(url, cache_dir=str(tmp_path)) as f:
        assert f.read() == b"cached"


def test_open_url_offline_fails_fast_and_says_where_to_put_the_file(tmp_path):
    url = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
    start = time.time()
    with pytest.raises(IOError) as exc:
        util.open_url(url, cache_dir=str(tmp_path), verbose=False)
    assert time.time() - start < 10
    assert url in str(exc.value) and str(tmp_path) in str(exc.value)


def test_logger_tees_to_file(tmp_path):
    log = tmp_path / "log.txt"
    with util.Logger(str(log)):
        print("to both")
    assert "to both" in log.read_text()


def test_persistent_object_unpickles_where_its_module_cannot_be_imported(tmp_path):
    moddir = tmp_path / "mods"
    moddir.mkdir()
    (moddir / "secret_net.py").write_text(textwrap.dedent("""
        import torch
        from torch_utils import persistence

        @persistence.persistent_class
        class Scale(torch.nn.Module):
            def __init__(self, factor, shape=(3,)):
                super().__init__()
                self.factor = factor
                self.weight = torch.nn.Parameter(torch.arange(float(shape[0])))

            def forward(self, x):
                return x * self.weight * self.factor
    """))
    build = textwrap.dedent(f"""
        import pickle, sys, torch
        sys.path.insert(0, {str(moddir)!r})
        import secret_net
        from torch_utils import persistence
        m = secret_net.Scale(2.5, shape=(3,))
        assert persistence.is_persistent(m) and m.init_args == (2.5,) and m.init_kwargs == dict(shape=(3,))
        pickle.dump(dict(m=m, out=m(torch.ones(3))), open({str(tmp_path / 'm.pkl')!r}, 'wb'))
    """)
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", build], check=True, env=env, cwd=str(tmp_path))
    load = textwrap.dedent(f"""
        import pickle, torch
        try:
            import secret_net
            raise SystemExit('module should not be importable')
        except ImportError:
            pass
        d = pickle.load(open({str(tmp_path / 'm.pkl')!r}, 'rb'))
        assert torch.equal(d['m'](torch.ones(3)), d['out'])
        print(type(d['m']).__module__)
    """)
    result = subprocess.run([sys.executable, "-c", load], env=env, cwd=str(tmp_path), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("_imported_module_")


def test_training_stats_collector():
    collector = training_stats.Collector(regex="Test/.*")
    training_stats.report("Test/a", torch.tensor([1.0, 2.0, 3.0]))
    training_stats.report("Test/a", 4.0)
    training_stats.report("Other/b", 1.0)
    collector.update()
    assert collector.num("Test/a") == 4
    assert collector.mean("Test/a") == pytest.approx(2.5)
    assert collector.std("Test/a") == pytest.approx(np.std([1, 2, 3, 4]))
    assert "Other/b" not in collector.as_dict()
    training_stats.report("Test/a", 10.0)
    collector.update()
    assert collector.mean("Test/a") == 10.0 and collector.num("Test/a") == 1


def test_assert_shape_and_copy_params_errors():
    with pytest.raises(AssertionError, match=r"got 3, expected 4 \(shape \[2, 3\] vs expected \[None, 4\]\)"):
        misc.assert_shape(torch.zeros(2, 3), [None, 4])
    with pytest.raises(ValueError, match="shape mismatch for 'weight'"):
        misc.copy_params_and_buffers(torch.nn.Linear(2, 3), torch.nn.Linear(3, 3))


def test_infinite_sampler_start_index_continues_the_sequence():
    data = list(range(10))
    full = misc.InfiniteSampler(data, seed=3)
    it = iter(full)
    seq = [next(it) for _ in range(25)]
    it2 = iter(misc.InfiniteSampler(data, seed=3, start_index=12))
    assert [next(it2) for _ in range(13)] == seq[12:]
    ranks = [iter(misc.InfiniteSampler(data, seed=3, rank=r, num_replicas=2)) for r in range(2)]
    interleaved = [next(ranks[i % 2]) for i in range(20)]
    assert interleaved == seq[:20]
