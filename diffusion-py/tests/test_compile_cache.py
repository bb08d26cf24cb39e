"""The compile cache: keys, invalidation, corruption, the warm-up hook, and a real torch round trip on CPU."""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from img2img_runner import compile_cache
from img2img_runner.compile_cache import CORRUPT, HIT, MISS, CompileCache, cache_key, differing_fields, open_cache, pipeline_fields
from img2img_runner.models import load_pipeline
from img2img_runner.tuning import TUNINGS

FIELDS = {
    "torch": "2.11.0+cu130",
    "triton": "3.6.0",
    "cuda": "13.0",
    "gpu": "NVIDIA H200",
    "capability": "9.0",
    "dtype": "float16",
    "tuning": {"name": "compile", "compile_mode": "default"},
    "max_batch": None,
    "unet": {"block_out_channels": [320, 640, 1280, 1280]},
}


class FakeBackend(compile_cache.Backend):
    """Stands in for torch.compiler's save/load: records loads, returns canned artifacts."""

    def __init__(self, produce=b"artifacts-1", compiled=True, keys=(("inductor", "k1"),), refuse=False, explode=False):
        self.produce, self.compiled, self.keys, self.refuse, self.explode = produce, compiled, keys, refuse, explode
        self.loaded: list[bytes] = []

    def _info(self, keys):
        info = type("Info", (), {})()
        info.artifacts = {}
        for kind, key in keys:
            info.artifacts.setdefault(kind, []).append(key)
        return info

    def load(self, data):
        if self.explode:
            raise RuntimeError("unpickling failed")
        if self.refuse:
            return None
        self.loaded.append(data)
        return self._info((("inductor", data.decode(errors="replace")),))

    def save(self):
        return None if self.produce is None else (self.produce, self._info(self.keys))

    def compiled_anything(self):
        return self.compiled


def entry(root, fields=FIELDS, backend=None):
    return CompileCache(root=str(root), fields=fields, backend=backend or FakeBackend())


# ------------------------------------------------------------------ keys


def test_key_is_stable_and_covers_every_field():
    assert cache_key(FIELDS) == cache_key(json.loads(json.dumps(FIELDS)))
    assert cache_key(FIELDS) == cache_key(dict(reversed(list(FIELDS.items()))))
    seen = {cache_key(FIELDS)}
    for name, other in [
        ("torch", "2.12.0"),
        ("triton", "3.7.0"),
        ("gpu", "NVIDIA H100 80GB HBM3"),
        ("capability", "8.0"),
        ("dtype", "bfloat16"),
        ("tuning", {"name": "regional", "compile_mode": "default"}),
        ("max_batch", 16),
        ("unet", {"block_out_channels": [320, 640, 1280]}),
    ]:
        key = cache_key({**FIELDS, name: other})
        assert key not in seen, name
        seen.add(key)
    key = cache_key(FIELDS)
    assert key.startswith(f"v{compile_cache.FORMAT}-") and key.replace("-", "").isalnum()


def test_differing_fields_names_what_changed():
    assert differing_fields(FIELDS, {**FIELDS, "torch": "2.10.0", "gpu": "NVIDIA A100"}) == ["gpu", "torch"]
    assert differing_fields(FIELDS, FIELDS) == []


def test_pipeline_fields_of_the_tiny_pipeline_ignore_provenance():
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    fields = pipeline_fields(pipe, TUNINGS["compile"], None, (64, 64))
    assert fields["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert fields["tuning"]["compile_mode"] == "default" and fields["dtype"] == "float32"
    # Compiling before or after the ready frame makes the same code: one entry for both.
    assert pipeline_fields(pipe, TUNINGS["compile-first"], None, (64, 64)) == fields
    assert not any(name.startswith("_") for name in fields["unet"])
    assert fields["unet"]["block_out_channels"] in ([32, 64], (32, 64))
    # JSON-safe and stable: the same pipeline gives the same key.
    assert cache_key(fields) == cache_key(pipeline_fields(pipe, TUNINGS["compile"], None, (64, 64)))
    assert cache_key(fields) != cache_key(pipeline_fields(pipe, TUNINGS["regional"], None, (64, 64)))
    assert cache_key(fields) != cache_key(pipeline_fields(pipe, TUNINGS["compile"], 8, (64, 64)))


def test_environment_fields_on_cpu():
    fields = compile_cache.environment_fields(torch.device("cpu"))
    assert fields["torch"] == torch.__version__ and fields["gpu"] == "cpu"


def test_no_directory_no_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV_DIR, raising=False)
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    assert open_cache(pipe, torch.device("cpu"), TUNINGS["compile"], None, (64, 64)) is None
    monkeypatch.setenv(compile_cache.ENV_DIR, str(tmp_path))
    cache = open_cache(pipe, torch.device("cpu"), TUNINGS["compile"], None, (64, 64))
    assert cache is not None and cache.directory == os.path.join(str(tmp_path), cache.key)


# ------------------------------------------------------------------ load / save


def test_miss_then_save_then_hit(tmp_path):
    cold = entry(tmp_path)
    assert cold.load() == MISS
    assert cold.save(compile_seconds=130.0) is True
    manifest = json.loads((tmp_path / cold.key / "manifest.json").read_text())
    assert manifest["key"] == cold.key and manifest["fields"] == FIELDS and manifest["compile_seconds"] == 130.0
    (file,) = manifest["files"]
    assert (tmp_path / cold.key / file["name"]).read_bytes() == b"artifacts-1"

    backend = FakeBackend(compiled=False)
    warm = entry(tmp_path, backend=backend)
    assert warm.load() == HIT
    assert backend.loaded == [b"artifacts-1"]
    # Everything came from the cache: nothing new, nothing to upload.
    assert warm.save() is False


def test_load_waits_for_the_consumers_download_to_end(tmp_path, monkeypatch):
    # The consumer downloads beside the spawn: the entry lands while the runner is already up.
    cold = entry(tmp_path)
    cold.load()
    cold.save()
    moved = tmp_path.parent / f"{tmp_path.name}-download"
    shutil.move(str(tmp_path / cold.key), moved)
    marker = tmp_path / compile_cache.DOWNLOAD_MARKER
    marker.write_text("1\n")
    monkeypatch.setenv(compile_cache.ENV_WAIT, "30")
    import threading

    def consumer_download():
        shutil.move(str(moved), tmp_path / cold.key)
        marker.unlink()

    timer = threading.Timer(0.3, consumer_download)
    timer.start()
    warm = entry(tmp_path, backend=FakeBackend(compiled=False))
    assert warm.load() == HIT  # a load that did not wait would have found nothing: a miss
    timer.join()


def test_a_download_that_outlasts_the_bound_is_not_waited_for(tmp_path, monkeypatch, caplog):
    (tmp_path / compile_cache.DOWNLOAD_MARKER).write_text("1\n")
    monkeypatch.setenv(compile_cache.ENV_WAIT, "0.2")
    with caplog.at_level(logging.WARNING, logger="img2img_runner"):
        assert entry(tmp_path).load() == MISS
    assert "the download still runs" in caplog.text
    # Without the consumer's bound (a runner started by hand) a marker is not waited for, nor warned about.
    monkeypatch.delenv(compile_cache.ENV_WAIT)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="img2img_runner"):
        assert entry(tmp_path).load() == MISS
    assert "still runs" not in caplog.text and "waited" not in caplog.text


def test_warm_start_that_compiled_more_appends_a_file(tmp_path):
    cold = entry(tmp_path)
    cold.load()
    cold.save()
    warm = entry(tmp_path, backend=FakeBackend(produce=b"artifacts-2", compiled=True, keys=(("inductor", "k2"),)))
    assert warm.load() == HIT
    assert warm.save() is True
    names = [item["name"] for item in json.loads((tmp_path / warm.key / "manifest.json").read_text())["files"]]
    assert len(names) == 2
    backend = FakeBackend(compiled=False)
    assert entry(tmp_path, backend=backend).load() == HIT
    assert backend.loaded == [b"artifacts-1", b"artifacts-2"]


def test_save_replaces_when_torch_re_records_the_loaded_artifacts(tmp_path):
    cold = entry(tmp_path)
    cold.load()
    cold.save()
    # The new bytes cover what was loaded (key "artifacts-1") and more: one file replaces the old one.
    keys = (("inductor", "artifacts-1"), ("inductor", "k2"))
    warm = entry(tmp_path, backend=FakeBackend(produce=b"everything", compiled=True, keys=keys))
    warm.load()
    assert warm.save() is True
    manifest = json.loads((tmp_path / warm.key / "manifest.json").read_text())
    assert [item["bytes"] for item in manifest["files"]] == [len(b"everything")]
    assert sorted(os.listdir(tmp_path / warm.key)) == sorted(["manifest.json", manifest["files"][0]["name"]])


def _saved(tmp_path):
    cold = entry(tmp_path)
    cold.load()
    cold.save()
    directory = tmp_path / cold.key
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory, directory / manifest["files"][0]["name"]


@pytest.mark.parametrize(
    "damage",
    ["flip_byte", "truncate", "delete_file", "bad_json", "other_fields", "no_files"],
)
def test_a_damaged_entry_is_moved_aside_and_recompiled(tmp_path, damage, caplog):
    directory, artifact = _saved(tmp_path)
    manifest_path = directory / "manifest.json"
    if damage == "flip_byte":
        data = bytearray(artifact.read_bytes())
        data[0] ^= 0xFF
        artifact.write_bytes(bytes(data))
    elif damage == "truncate":
        artifact.write_bytes(artifact.read_bytes()[:-1])
    elif damage == "delete_file":
        artifact.unlink()
    elif damage == "bad_json":
        manifest_path.write_text("{not json")
    elif damage == "other_fields":
        manifest = json.loads(manifest_path.read_text())
        manifest["fields"]["torch"] = "0.0"
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "no_files":
        manifest = json.loads(manifest_path.read_text())
        manifest["files"] = []
        manifest_path.write_text(json.dumps(manifest))
    backend = FakeBackend(produce=b"fresh")
    cache = entry(tmp_path, backend=backend)
    with caplog.at_level(logging.WARNING, logger="img2img_runner"):
        assert cache.load() == CORRUPT
    assert backend.loaded == []
    assert not directory.exists()
    assert any(name.startswith(directory.name + ".bad-") for name in os.listdir(tmp_path))
    assert "compiling from scratch" in caplog.text
    # The runner compiles, then writes a fresh entry that loads.
    assert cache.save() is True
    assert entry(tmp_path, backend=FakeBackend(compiled=False)).load() == HIT


@pytest.mark.parametrize("how", ["refuse", "explode"])
def test_torch_refusing_the_artifacts_is_a_corrupt_entry(tmp_path, how):
    directory, _artifact = _saved(tmp_path)
    cache = entry(tmp_path, backend=FakeBackend(**{how: True}))
    assert cache.load() == CORRUPT
    assert not directory.exists()


def test_entries_for_other_keys_are_a_logged_miss(tmp_path, caplog):
    old = entry(tmp_path, fields={**FIELDS, "torch": "2.10.0"})
    old.load()
    old.save()
    cache = entry(tmp_path)
    with caplog.at_level(logging.INFO, logger="img2img_runner"):
        assert cache.load() == MISS
    assert "differing: torch" in caplog.text
    # The other key's entry is left alone (another runner may use it).
    assert (tmp_path / old.key / "manifest.json").exists()


def test_save_failures_never_raise(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = CompileCache(root=str(blocker), fields=FIELDS, backend=FakeBackend())
    assert cache.load() == MISS
    assert cache.save() is False
    assert CompileCache(root=str(tmp_path), fields=FIELDS, backend=FakeBackend(produce=None)).save() is False


def test_cli_lists_and_checks_entries(tmp_path, capsys):
    _saved(tmp_path)
    assert compile_cache.main([str(tmp_path)]) == 0
    assert "ok, 1 file(s)" in capsys.readouterr().out
    directory, artifact = _saved(tmp_path / "other")
    artifact.write_bytes(b"x")
    assert compile_cache.main([str(tmp_path / "other")]) == 1


# ------------------------------------------------------------------ the warm-up hook (warmup.warm_up_tuned)


def test_warm_up_tuned_loads_then_saves(monkeypatch, tmp_path):
    import img2img_runner.warmup as tuning

    backend = FakeBackend(produce=b"compiled")
    monkeypatch.setattr(compile_cache, "Backend", lambda: backend)
    calls = []
    monkeypatch.setattr(tuning, "_warm_up", lambda pipe, device, max_batch, size: calls.append(max_batch) or max_batch)
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    pipe._img2img_tuning = TUNINGS["compile"]
    assert tuning.warm_up_tuned(pipe, torch.device("cpu"), 4, cache_dir=str(tmp_path)) == 4
    (key,) = os.listdir(tmp_path)
    assert json.loads((tmp_path / key / "manifest.json").read_text())["fields"]["max_batch"] == 4
    backend.compiled = False
    assert tuning.warm_up_tuned(pipe, torch.device("cpu"), 4, cache_dir=str(tmp_path)) == 4
    assert backend.loaded == [b"compiled"] and calls == [4, 4]


def test_warm_up_failing_with_loaded_artifacts_recompiles_without_caches(monkeypatch, tmp_path):
    import torch._inductor.config as inductor_config

    import img2img_runner.warmup as tuning

    backend = FakeBackend(produce=b"compiled")
    monkeypatch.setattr(compile_cache, "Backend", lambda: backend)
    monkeypatch.setattr(inductor_config, "force_disable_caches", False)
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    pipe._img2img_tuning = TUNINGS["compile"]
    monkeypatch.setattr(tuning, "_warm_up", lambda pipe, device, max_batch, size: max_batch)
    tuning.warm_up_tuned(pipe, torch.device("cpu"), 2, cache_dir=str(tmp_path))
    attempts = []

    def flaky(pipe, device, max_batch, size):
        attempts.append(inductor_config.force_disable_caches)
        if len(attempts) == 1:
            raise RuntimeError("bad kernel from the cache")
        return max_batch

    monkeypatch.setattr(tuning, "_warm_up", flaky)
    assert tuning.warm_up_tuned(pipe, torch.device("cpu"), 2, cache_dir=str(tmp_path)) == 2
    assert attempts == [False, True]
    assert any(".bad-" in name for name in os.listdir(tmp_path))


def test_untuned_or_uncompiled_pipelines_touch_no_cache(monkeypatch, tmp_path):
    import img2img_runner.warmup as tuning

    monkeypatch.setattr(tuning, "_warm_up", lambda pipe, device, max_batch, size: max_batch)
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    pipe._img2img_tuning = TUNINGS["eager"]
    tuning.warm_up_tuned(pipe, torch.device("cpu"), 2, cache_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ real torch.compile artifacts, on CPU

ROUND_TRIP = r"""
import json, sys, torch
from img2img_runner.compile_cache import CompileCache, compile_stats

fields = {"test": "round-trip", "torch": torch.__version__}
cache = CompileCache(root=sys.argv[1], fields=fields)
status = cache.load()

@torch.compile
def f(x, y):
    return torch.nn.functional.silu(x @ y + 1).sum(dim=-1)

x = torch.arange(64, dtype=torch.float32).reshape(8, 8) / 64
out = f(x, x.T)
saved = cache.save()
print(json.dumps({"status": status, "saved": saved, "stats": compile_stats(), "out": out.tolist()}))
"""


def _have_cxx() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("c++") is not None


@pytest.mark.skipif(not _have_cxx(), reason="Inductor on CPU needs a C++ compiler")
def test_real_artifacts_round_trip_through_a_fresh_process(tmp_path):
    root = tmp_path / "cache"
    package = pathlib.Path(__file__).resolve().parents[1]

    def run(name):
        # Each process gets empty Inductor / Triton caches of its own: only the compile cache carries over.
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / name / "inductor"), "TRITON_CACHE_DIR": str(tmp_path / name / "triton")}
        done = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(root)], cwd=package, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = run("cold")
    assert cold["status"] == MISS and cold["saved"] is True and cold["stats"]["fxgraph_miss"] >= 1
    warm = run("warm")
    assert warm["status"] == HIT and warm["saved"] is False
    assert warm["stats"]["fxgraph_hit"] >= 1 and warm["stats"]["fxgraph_miss"] == 0
    assert np.allclose(warm["out"], cold["out"])


# ------------------------------------------------------------------ regional compilation (tuning "regional")


def test_regional_compilation_shares_graphs_between_identical_blocks():
    import torch._dynamo
    from torch._dynamo.utils import counters

    from img2img_runner.runner import images_to_tensor, tensor_to_arrays
    from img2img_runner.tuning import REGION_CLASSES, Tuning, apply_tuning
    from tests.helpers import sample_image

    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    images = [sample_image(seed, (64, 64)) for seed in range(2)]
    kwargs = dict(prompt=["a", "b"], negative_prompt=["", ""], strength=0.6, num_inference_steps=4, guidance_scale=7.5, output_type="pt")

    def call():
        generators = [torch.Generator().manual_seed(seed) for seed in range(2)]
        with torch.inference_mode():
            return np.stack(tensor_to_arrays(pipe(image=images_to_tensor(images, torch.device("cpu")), generator=generators, **kwargs).images))

    before = call()
    blocks = sum(type(module).__name__ in REGION_CLASSES for module in [*pipe.unet.modules(), *pipe.vae.modules()])
    torch._dynamo.reset()
    counters.clear()
    # Dynamo alone (backend "eager"): the same arithmetic, so the same bytes; what is counted is graphs.
    with torch._dynamo.config.patch(automatic_dynamic_shapes=True, recompile_limit=8):
        apply_tuning(pipe, Tuning("regional-test", compile_mode="default", compile_backend="eager", regional=True))
        compiled = len(pipe._img2img_switches)
        after = call()
        graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert compiled == blocks > 0
    assert np.array_equal(before, after)
    # Identical blocks reuse a graph: fewer graphs than compiled blocks.
    assert 0 < graphs < blocks, (graphs, blocks)
