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
