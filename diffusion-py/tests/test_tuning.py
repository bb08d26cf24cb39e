"""The GPU path's CPU-checkable parts: when tuning applies, and tensor I/O giving PIL's bytes."""

import dataclasses

import numpy as np
import pytest
import torch

from img2img_runner.models import load_pipeline
from img2img_runner.runner import images_to_tensor, tensor_to_arrays
from img2img_runner.tuning import DEFAULT_TUNING, TUNINGS, Tuning, apply_tuning, wants_tuning
from img2img_runner.warmup import BATCH_CAP, batch_cap, native_size
from tests.helpers import sample_image


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline("tiny", device=torch.device("cpu"))


def test_never_tunes_cpu_or_tiny(tiny):
    assert not wants_tuning("tiny", torch.device("cuda", 0), tiny)
    assert not wants_tuning("sd15", torch.device("cpu"), tiny)
    assert wants_tuning("sd15", torch.device("cuda", 0), tiny)


def test_default_is_compiled_and_off_is_plain():
    assert DEFAULT_TUNING == "compile" and TUNINGS["compile"].compile_mode
    assert TUNINGS["off"] == Tuning("off")


def test_exact_tunings_differ_from_the_default_only_in_how_they_compile():
    exact = TUNINGS["compile"]
    assert exact.background and not exact.feature_cache and not exact.tiny_vae
    assert dataclasses.replace(TUNINGS["compile-first"], name="compile", background=True) == exact
    fast = TUNINGS["fast"]
    assert fast.feature_cache >= 2 and fast.tiny_vae  # the opt-in trade
    # faster: the same trade with fewer full steps, nothing else changed.
    faster = TUNINGS["faster"]
    assert faster.feature_cache > fast.feature_cache
    assert dataclasses.replace(faster, name="fast", feature_cache=fast.feature_cache) == fast
    # fastest: faster with guidance in the first steps only, its UNet calls replayed from CUDA
    # graphs; no other tuning drops guidance.
    fastest = TUNINGS["fastest"]
    assert 0 < fastest.guidance_share < 1
    assert dataclasses.replace(fastest, name="faster", guidance_share=1.0, cuda_graphs=False, batch_cap=0) == faster
    assert [name for name, tuning in TUNINGS.items() if tuning.guidance_share < 1] == ["fastest"]


def test_a_tuning_may_raise_the_batch_cap(tiny):
    assert batch_cap(tiny) == BATCH_CAP
    tiny._img2img_tuning = TUNINGS["fastest"]
    try:
        assert batch_cap(tiny) == TUNINGS["fastest"].batch_cap > BATCH_CAP
    finally:
        del tiny._img2img_tuning


def test_native_size(tiny):
    assert native_size(tiny) == (64, 64)


def test_tensor_io_gives_the_pil_path_bytes(tiny):
    images = [sample_image(seed, (64, 64)) for seed in range(3)]
    common = dict(
        prompt=["a", "b", "c"], negative_prompt=["", "", ""], strength=0.6, num_inference_steps=10, guidance_scale=7.5
    )

    def generators():
        return [torch.Generator().manual_seed(seed) for seed in range(3)]

    with torch.inference_mode():
        pil = tiny(image=images, generator=generators(), output_type="pil", **common).images
        tensors = tiny(image=images_to_tensor(images, torch.device("cpu")), generator=generators(), output_type="pt", **common).images
    for expected, got in zip(pil, tensor_to_arrays(tensors)):
        assert got.dtype == np.uint8 and np.array_equal(np.asarray(expected), got)


def test_eager_tuning_keeps_outputs_close():
    # fused QKV + channels_last on the toy model (CPU, float32): same function, float rounding only.
    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    images = [sample_image(7, (64, 64))]
    kwargs = dict(prompt=["a"], negative_prompt=[""], strength=0.6, num_inference_steps=6, guidance_scale=7.5, output_type="pt")
    with torch.inference_mode():
        before = tiny_call(pipe, images, kwargs)
        apply_tuning(pipe, Tuning("t", fuse_qkv=True, channels_last=True))
        after = tiny_call(pipe, images, kwargs)
    assert np.abs(before.astype(int) - after.astype(int)).max() <= 2


def tiny_call(pipe, images, kwargs):
    output = pipe(image=images_to_tensor(images, torch.device("cpu")), generator=[torch.Generator().manual_seed(0)], **kwargs)
    return tensor_to_arrays(output.images)[0]


def test_failed_tuning_serves_the_plain_pipeline(monkeypatch):
    import argparse
    import logging

    import img2img_runner.tuning as tuning
    from img2img_runner.cli import _prepare

    def broken(pipe, tuning, defer_compile=False):
        raise RuntimeError("compiler failed")

    monkeypatch.setattr(tuning, "wants_tuning", lambda *args: True)
    monkeypatch.setattr(tuning, "apply_tuning", broken)
    loads = []

    def load():
        loads.append(1)
        return load_pipeline("tiny", device=torch.device("cpu"))

    args = argparse.Namespace(tuning="auto", model="sd15", max_batch=None, no_cuda_graphs=False)
    pipe, tuned, max_batch, background = _prepare(load, args, torch.device("cpu"), logging.getLogger("test"), "compile")
    assert (tuned, max_batch, len(loads), background) == (False, 4, 2, None)
    assert pipe is not None


def test_the_fast_tuning_takes_the_models_own_tiny_vae_or_none(tmp_path):
    from diffusers import AutoencoderTiny

    from img2img_runner.arch import tiny_vae_like
    from img2img_runner.tuning import TINY_VAE_FOLDER, tiny_vae_for

    pipe = load_pipeline("tiny", device=torch.device("cpu"))
    # Benchmark models (random weights anyway): a random TAESD-sized one.
    assert isinstance(tiny_vae_for(pipe, "sd15-arch"), AutoencoderTiny)
    # A real model without TAESD weights keeps its full VAE (a random one would make noise).
    assert tiny_vae_for(pipe, None) is None
    assert tiny_vae_for(pipe, str(tmp_path)) is None
    # A real model with SOURCE/vae_tiny gets exactly those weights.
    saved = tiny_vae_like(pipe.vae, torch.device("cpu"), torch.float32)
    saved.save_pretrained(tmp_path / TINY_VAE_FOLDER)
    loaded = tiny_vae_for(pipe, str(tmp_path))
    assert isinstance(loaded, AutoencoderTiny)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))
