"""Feature caching across denoising steps (DeepCache, Ma et al. 2023) for the `fast` tuning.

Adjacent denoising steps change the UNet's deep features little. Every
`interval`-th step runs the whole UNet and keeps the output of the second-to-last
up block; the steps between run only the shallowest path (conv_in, the first
down block, the last up block, conv_out) and take the deep features from that
cache. The skipped blocks are the deep, low-resolution ones, so a skipped step
costs a fraction of a full one.

It trades exactness for speed: outputs differ from the exact pipeline's on the
same seeds (bench/gpu measures by how much). With the benchmark models' random
weights that deviation says nothing about visual quality.

How: the stock UNet2DConditionModel.forward runs unchanged; the skipped blocks'
forwards are replaced by ones that return placeholders of the right arity (the
UNet's loop only slices and passes them on) when the step is a cached one. The
step counter restarts whenever the scheduler sets its timesteps (once per
pipeline call), and a batch whose size differs from the cached features' runs
in full, so one call never reads another call's features.
"""

import torch


class DeepCache:
    def __init__(self, interval: int):
        if interval < 2:
            raise ValueError("a cache interval below 2 caches nothing")
        self.interval = interval
        self.enabled = True  # benchmarks switch it off to time the same pipeline without it
        self.step = 0
        self.skip = False  # read by the patched blocks: this UNet call reuses the cached features
        self.feature = None  # output of the second-to-last up block at the last full step

    def restart(self) -> None:
        self.step = 0
        self.feature = None

    def begin_call(self, sample: torch.Tensor) -> None:
        """Decide whether this UNet call is a full or a cached step."""
        fresh = self.feature is None or self.feature.shape[0] != sample.shape[0]
        self.skip = self.enabled and not fresh and self.step % self.interval != 0
        self.step += 1


def _res_count(block) -> int:
    """How many skip connections a down block hands to the up path."""
    return len(block.resnets) + (len(block.downsamplers) if getattr(block, "downsamplers", None) else 0)


def install(unet, scheduler, interval: int) -> DeepCache:
    """Patch unet (and scheduler.set_timesteps) in place; return the cache state."""
    if len(unet.down_blocks) < 2 or len(unet.up_blocks) < 2:
        raise ValueError("feature caching needs at least two down and two up blocks")
    cache = DeepCache(interval)

    def skipped_down(block, count):
        forward = block.forward

        def run(hidden_states, *args, **kwargs):
            if cache.skip:
                return hidden_states, (hidden_states,) * count
            return forward(hidden_states, *args, **kwargs)

        return run

    def skipped(block):
        forward = block.forward

        def run(hidden_states, *args, **kwargs):
            return hidden_states if cache.skip else forward(hidden_states, *args, **kwargs)

        return run

    def cached(block):
        forward = block.forward

        def run(hidden_states, *args, **kwargs):
            if cache.skip:
                return cache.feature
            cache.feature = forward(hidden_states, *args, **kwargs)
            return cache.feature

        return run

    for block in unet.down_blocks[1:]:
        block.forward = skipped_down(block, _res_count(block))
    if unet.mid_block is not None:
        unet.mid_block.forward = skipped(unet.mid_block)
    for block in unet.up_blocks[:-2]:
        block.forward = skipped(block)
    unet.up_blocks[-2].forward = cached(unet.up_blocks[-2])

    forward = unet.forward

    def unet_forward(sample, *args, **kwargs):
        cache.begin_call(sample)
        if cache.feature is not None and cache.feature.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(cache.feature, 0)
        return forward(sample, *args, **kwargs)

    unet.forward = unet_forward

    set_timesteps = scheduler.set_timesteps

    def restart_then_set(*args, **kwargs):
        cache.restart()
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = restart_then_set
    return cache
