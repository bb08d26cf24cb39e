"""Feature caching across steps (deepcache.py, the `fast` tuning) on the tiny pipeline's UNet, on CPU."""

import numpy as np
import pytest
import torch

from img2img_runner import deepcache
from img2img_runner.models import load_pipeline
from tests.helpers import call_tiny

CPU = torch.device("cpu")


def stock_pipeline():
    pipe = load_pipeline("tiny", device=CPU)
    # The tiny model runs its UNet sample by sample (an instance forward); feature caching needs the stock forward.
    del pipe.unet.forward
    return pipe


def count_full_steps(unet):
    """Counts calls of a block that only full steps run."""
    calls = []
    forward = unet.down_blocks[1].forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    unet.down_blocks[1].forward = counted
    return calls


def call(pipe, steps=6, batch=2):
    return call_tiny(pipe, batch=batch, steps=steps, strength=1.0)


def test_every_third_step_is_full_and_each_call_starts_full():
    pipe = stock_pipeline()
    exact = call(pipe)
    full = count_full_steps(pipe.unet)
    deepcache.install(pipe.unet, pipe.scheduler, interval=3)
    fast = call(pipe)
    assert len(full) == 2  # steps 0 and 3 of 6
    again = call(pipe)
    assert len(full) == 4  # the second call started from a full step, not from the first call's features
    assert np.array_equal(fast, again)
    assert fast.shape == exact.shape
    # Not exact: it must differ (else nothing was skipped), and stay an image of the same input.
    assert not np.array_equal(fast, exact)


def test_a_full_step_is_the_exact_unet():
    pipe = stock_pipeline()
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    later = sample * 0.9
    with torch.inference_mode():
        exact, exact_later = pipe.unet(sample, 10, text).sample, pipe.unet(later, 9, text).sample
        deepcache.install(pipe.unet, pipe.scheduler, interval=3)
        pipe.scheduler.set_timesteps(6)
        first = pipe.unet(sample, 10, text).sample
        cached = pipe.unet(later, 9, text).sample  # deep features of the step before
    assert torch.equal(first, exact)
    assert not torch.equal(cached, exact_later)


def test_another_batch_size_never_reads_the_cached_features():
    pipe = stock_pipeline()
    text = torch.zeros(4, 77, pipe.unet.config.cross_attention_dim)
    full = count_full_steps(pipe.unet)
    cache = deepcache.install(pipe.unet, pipe.scheduler, interval=3)
    with torch.inference_mode():
        pipe.unet(torch.zeros(2, 4, 8, 8), 10, text[:2])
        pipe.unet(torch.zeros(4, 4, 8, 8), 10, text)  # step 1 would be cached, but the batch differs
    assert len(full) == 2 and cache.feature.shape[0] == 4


def test_interval_below_two_is_refused():
    with pytest.raises(ValueError):
        deepcache.DeepCache(1)


def layered_unet(first_block_attends: bool):
    """A small UNet with two layers a block (as SD 1.5 and SDXL): the first block with attention (SD 1.5) or without (SDXL)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    down = ("CrossAttnDownBlock2D", "DownBlock2D") if first_block_attends else ("DownBlock2D", "CrossAttnDownBlock2D")
    up = ("UpBlock2D", "CrossAttnUpBlock2D") if first_block_attends else ("CrossAttnUpBlock2D", "UpBlock2D")
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=2,
        norm_num_groups=8,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    return unet.eval()


class Scheduler:
    def set_timesteps(self, *_args):
        pass


def count_calls(modules):
    """Wraps each module's forward (before install wraps it again) to count the calls that compute."""
    calls = []
    for module in modules:
        forward = module.forward

        def counted(*args, forward=forward, module=module, **kwargs):
            calls.append(module)
            return forward(*args, **kwargs)

        module.forward = counted
    return calls


@pytest.mark.parametrize("first_block_attends", [True, False], ids=["sd15-like", "sdxl-like"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_cached_step_on_the_full_steps_inputs_gives_the_full_steps_output(first_block_attends, layers):
    """Wiring: the cached feature enters where it was taken, each skip connection reaches its layer."""
    unet = layered_unet(first_block_attends)
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    resnets = [module for module in unet.modules() if type(module).__name__ == "ResnetBlock2D"]
    calls = count_calls(resnets)
    scheduler = Scheduler()
    cache = deepcache.install(unet, scheduler, interval=3, layers=layers)
    scheduler.set_timesteps(6)
    with torch.inference_mode():
        exact = unet(sample, 10, text).sample
        full_calls = len(calls)
        cached = unet(sample, 10, text).sample
    assert cache.skip  # the second call was a cached step
    assert torch.equal(cached, exact)
    # A cached step computes `layers` resnets of the first down block, and in the last up block
    # the ones whose skip connection it made fresh: `layers` of the first block's, and conv_in's.
    assert len(calls) - full_calls == layers + layers + 1 < full_calls


def test_the_layers_can_change_between_calls():
    unet = layered_unet(True)
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    scheduler = Scheduler()
    with torch.inference_mode():
        exact_later = unet(sample * 0.9, 9, text).sample
        cache = deepcache.install(unet, scheduler, interval=3)
        outputs = {}
        for layers in (2, 1):
            cache.layers = layers
            scheduler.set_timesteps(6)
            unet(sample, 10, text)
            outputs[layers] = unet(sample * 0.9, 9, text).sample
    assert not torch.equal(outputs[2], exact_later) and not torch.equal(outputs[1], exact_later)
    assert not torch.equal(outputs[1], outputs[2])


def test_layers_out_of_range_are_refused():
    with pytest.raises(ValueError, match="1 to 2 shallow layers"):
        deepcache.install(layered_unet(True), Scheduler(), interval=3, layers=3)
    with pytest.raises(ValueError, match="1 to 2 shallow layers"):
        deepcache.install(layered_unet(True), Scheduler(), interval=3, layers=0)
