"""The GPU tuning of the DiT families (FLUX.1, SD3) on toy pipelines of the real classes, on CPU:
what it compiles, what it leaves out, and the background compile with Dynamo alone (backend "eager")."""

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from img2img_runner import compile_cache
from img2img_runner.background import call_batch, switches_of
from img2img_runner.cli import _untuned_because
from img2img_runner.models import load_pipeline
from img2img_runner.runner import tensor_to_arrays
from img2img_runner.tuning import TUNINGS, Tuning, apply_tuning, compile_targets, for_dit, is_dit, repeated_blocks, tuning_of, wants_tuning
from img2img_runner.warmup import BATCH_CAP, DIT_BATCH_CAP, batch_cap, native_size, warm_up_background
from tests import tiny_dit

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)
# The default tuning's switches, compiled by Dynamo alone: same bytes as eager, seconds to compile.
DEFERRED_EXACT = Tuning("test-exact", fuse_qkv=True, channels_last=True, compile_mode="default", compile_backend="eager", background=True)


def _evaluating(pipe):
    # As from_pretrained leaves them (T5's dropout off): a call's output depends on its seeds only.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipe


def build_flux():
    return _evaluating(tiny_dit.build_flux())


def build_sd3():
    return _evaluating(tiny_dit.build_sd3())


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def call(pipe, batch: int = 1, size: int = 64, seed: int = 0) -> np.ndarray:
    """A seeded img2img call at size x size, as the flux family makes it (one transformer call a step)."""
    rng = np.random.default_rng(seed)
    from PIL import Image

    images = [Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)) for _ in range(batch)]
    with torch.inference_mode():
        output = pipe(
            prompt=[f"a lighthouse {index}" for index in range(batch)],
            image=images,
            strength=0.75,
            num_inference_steps=4,
            height=size,
            width=size,
            generator=[torch.Generator().manual_seed(index) for index in range(batch)],
            output_type="pt",
        )
    return np.stack(tensor_to_arrays(output.images))


def test_dit_pipelines_are_tuned_on_cuda_only():
    flux, sd3, tiny = build_flux(), build_sd3(), load_pipeline("tiny", device=CPU)
    assert is_dit(flux) and is_dit(sd3) and not is_dit(tiny)
    assert wants_tuning("flux", CUDA, flux) and wants_tuning("sd3", CUDA, sd3)
    assert not wants_tuning("flux", CPU, flux)


def test_the_repeated_blocks_are_what_is_compiled():
    flux, sd3 = build_flux(), build_sd3()
    # FLUX.1 declares its blocks (diffusers' _repeated_blocks): the double- and single-stream ones.
    assert [type(block).__name__ for block in repeated_blocks(flux.transformer)] == ["FluxTransformerBlock", "FluxSingleTransformerBlock"]
    # SD3 declares none: the classes of its block stack.
    assert [type(block).__name__ for block in repeated_blocks(sd3.transformer)] == ["JointTransformerBlock"]
    assert compile_targets(flux, TUNINGS["compile"]) == repeated_blocks(flux.transformer)


def test_unet_only_trades_are_left_out_for_a_dit():
    assert for_dit(TUNINGS["compile"]) is TUNINGS["compile"]
    fast = for_dit(TUNINGS["fastest"])
    assert (fast.feature_cache, fast.tiny_vae, fast.guidance_share) == (0, False, 1.0)
    assert fast.compile_mode == TUNINGS["fastest"].compile_mode and fast.name == "fastest"
    # What apply_tuning records (and the compile cache keys on) is the part the DiT took.
    pipe = build_flux()
    apply_tuning(pipe, Tuning("t", tiny_vae=True, feature_cache=3))
    assert (tuning_of(pipe).tiny_vae, tuning_of(pipe).feature_cache) == (False, 0)
    assert type(pipe.vae).__name__ == "AutoencoderKL"


def test_fused_qkv_only_where_the_fused_attention_keeps_the_function():
    flux = build_flux()
    before = call(flux)
    apply_tuning(flux, Tuning("t", fuse_qkv=True, channels_last=True))
    assert all(module.fused_projections for module in flux.transformer.modules() if hasattr(module, "fuse_projections"))
    # Float rounding only: FLUX.1's processor reads the fused weights and still applies its norms.
    assert np.abs(before.astype(int) - call(flux).astype(int)).max() <= 2
    # channels_last is the UNet path's: a DiT's VAE stays eager, in its default layout.
    assert all(parameter.is_contiguous() for parameter in flux.vae.parameters())
    # SD3's fused processor would skip SD 3.5's query/key RMS norms: left unfused.
    sd3 = build_sd3()
    apply_tuning(sd3, Tuning("t", fuse_qkv=True))
    assert type(sd3.transformer.transformer_blocks[0].attn.processor).__name__ != "FusedJointAttnProcessor2_0"
    assert not getattr(sd3.transformer.transformer_blocks[0].attn, "fused_projections", False)


def test_a_calls_batch_is_its_first_tensors():
    hidden, rotary = torch.zeros(2, 16, 8), (torch.zeros(16, 4), torch.zeros(16, 4))
    assert call_batch((), {"hidden_states": hidden, "temb": torch.zeros(2, 8), "image_rotary_emb": rotary}) == 2
    assert call_batch((torch.zeros(1, 16, 8),), {"image_rotary_emb": rotary}) == 1
    assert call_batch((), {"joint_attention_kwargs": None}) == 1


@pytest.mark.parametrize("build", [build_flux, build_sd3], ids=["flux", "sd3"])
def test_blocks_compile_in_the_background_and_serve_the_same_bytes(build, fresh_dynamo):
    pipe = build()
    # The toy at its native size (default_sample_size x 8 = 1024) would cost seconds a call on CPU.
    pipe.default_sample_size = 8
    assert native_size(pipe) == (64, 64)
    apply_tuning(pipe, DEFERRED_EXACT, defer_compile=True)
    switches = switches_of(pipe)
    assert len(switches) == len(repeated_blocks(pipe.transformer)) > 0
    # Batch 4: the compile thread also runs the recorded batch at the largest size; FLUX.1's
    # rotary embedding (one row a token) is not the batch's and must not be repeated.
    batch, compile_thread = warm_up_background(pipe, CPU, max_batch=4)
    assert batch == 4
    assert compile_thread.wait(timeout=300) and not compile_thread.failed
    eager = call(pipe, batch=2)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    assert compile_thread.switch_if_ready()
    assert all(switch.active is switch.compiled for switch in switches)
    assert np.array_equal(call(pipe, batch=2), eager)
    # The native size's batches 1 to the largest compile nothing new.
    for rows in (1, 3, 4):
        call(pipe, batch=rows)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_dit_batches_up_to_its_own_cap():
    assert batch_cap(build_flux()) == batch_cap(build_sd3()) == DIT_BATCH_CAP
    assert batch_cap(load_pipeline("tiny", device=CPU)) == BATCH_CAP
    assert native_size(build_flux()) == (1024, 1024)


def test_the_compile_cache_keys_on_the_transformer():
    flux, other = build_flux(), build_flux()
    fields = compile_cache.pipeline_fields(flux, TUNINGS["compile"], 4, (1024, 1024))
    assert fields["transformer_class"] == "FluxTransformer2DModel"
    assert fields["transformer"]["num_layers"] == 1
    other.transformer.register_to_config(num_layers=2)
    assert compile_cache.pipeline_fields(other, TUNINGS["compile"], 4, (1024, 1024)) != fields
    # A UNet pipeline's key has no transformer fields: its entries stay valid.
    assert "transformer" not in compile_cache.pipeline_fields(load_pipeline("tiny", device=CPU), TUNINGS["compile"], 4, (64, 64))


def test_an_untuned_model_says_why():
    assert _untuned_because("flux", "off", build_flux()) == "tuning=off"
    assert _untuned_because("tiny", "compile", load_pipeline("tiny", device=CPU)) == "the built-in toy model is never tuned"
