"""Feature caching across denoising steps (DeepCache, Ma et al. 2023) for the `fast` tuning.

Adjacent denoising steps change the UNet's deep features little. Every
`interval`-th step runs the whole UNet and keeps the feature where the up path
re-enters the shallowest level; the steps between run only the shallowest
path and take the deep features from that cache. `layers` says how much of
that path a cached step still runs: the first `layers` layers (resnet, and
attention where the block has one) of the first down block, their partners in
the last up block, conv_in and conv_out. layers=1 is DeepCache's shallowest
branch (`cache_branch_id=0`, its documented default); layers equal to the
first down block's depth caches the second-to-last up block's output. The
fewer layers, the cheaper
a cached step and the larger the deviation.

It trades exactness for speed: outputs differ from the exact pipeline's on the
same seeds (bench/gpu measures by how much). With the benchmark models' random
weights that deviation says nothing about visual quality.

How: the stock UNet2DConditionModel.forward runs unchanged; on a cached step
the skipped blocks and layers return placeholders of the right arity (their
input: the UNet's loop only slices and passes them on), and the cache point
returns the cached feature. The step counter restarts whenever the scheduler
sets its timesteps (once per pipeline call), and a batch whose size differs
from the cached feature's runs in full, so one call never reads another
call's features.
"""

import torch


class DeepCache:
    def __init__(self, interval: int, layers: int = 1, depth: int = 1):
        if interval < 2:
            raise ValueError("a cache interval below 2 caches nothing")
        self.interval = interval
        self.depth = depth  # layers in the UNet's first down block: the most a cached step can run
        self.layers = layers
        self.enabled = True  # benchmarks switch it off to time the same pipeline without it
        self.step = 0
        self.skip = False  # read by the patched modules: this UNet call reuses the cached feature
        self.feature = None  # the cache point's output at the last full step

    @property
    def layers(self) -> int:
        """Shallow layers a cached step still runs; checked when set (benchmarks change it between calls)."""
        return self._layers

    @layers.setter
    def layers(self, value: int) -> None:
        if not 1 <= value <= self.depth:
            raise ValueError(f"feature caching runs 1 to {self.depth} shallow layers, not {value}")
        self._layers = value

    def restart(self) -> None:
        self.step = 0
        self.feature = None

    def begin_call(self, sample: torch.Tensor) -> None:
        """Decide whether this UNet call is a full or a cached step."""
        fresh = self.feature is None or self.feature.shape[0] != sample.shape[0]
        self.skip = self.enabled and not fresh and self.step % self.interval != 0
        self.step += 1


SKIP, RUN, CACHE = "skip", "run", "cache"


def _res_count(block) -> int:
    """How many skip connections a down block hands to the up path."""
    return len(block.resnets) + (len(block.downsamplers) if getattr(block, "downsamplers", None) else 0)


def _same(hidden_states):
    return hidden_states


def _one(hidden_states):  # a transformer's output as its block asks for it (return_dict=False)
    return (hidden_states,)


def _layer(block, index: int) -> list:
    """A block's index-th layer as (module, placeholder) pairs: its resnet, then its attention where it has one."""
    attentions = getattr(block, "attentions", None)
    return [(block.resnets[index], _same)] + ([(attentions[index], _one)] if attentions else [])


def install(unet, scheduler, interval: int, layers: int = 1) -> DeepCache:
    """Patch unet (and scheduler.set_timesteps) in place; return the cache state.

    The roles follow cache.layers at each call, so a benchmark can change it
    between pipeline calls without installing again.
    """
    if len(unet.down_blocks) < 2 or len(unet.up_blocks) < 2:
        raise ValueError("feature caching needs at least two down and two up blocks")
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    depth = len(first.resnets)
    if len(last.resnets) != depth + 1:
        raise ValueError("feature caching needs the last up block to mirror the first down block")
    cache = DeepCache(interval, layers, depth)

    def patch(module, role_of, placeholder):
        forward = module.forward

        def run(hidden_states, *args, **kwargs):
            role = role_of()
            if role == CACHE:
                if cache.skip:
                    return placeholder(cache.feature)
                output = forward(hidden_states, *args, **kwargs)
                cache.feature = output[0] if isinstance(output, tuple) else output
                return output
            if role == SKIP and cache.skip:
                return placeholder(hidden_states)
            return forward(hidden_states, *args, **kwargs)

        module.forward = run

    def down_placeholder(count):
        return lambda hidden_states: (hidden_states, (hidden_states,) * count)

    # The first down block: its layers from cache.layers on, and its downsampler (read by skipped blocks only).
    for index in range(depth):
        for module, placeholder in _layer(first, index):
            patch(module, lambda index=index: SKIP if index >= cache.layers else RUN, placeholder)
    for module in getattr(first, "downsamplers", None) or []:
        patch(module, lambda: SKIP, _same)
    for block in unet.down_blocks[1:]:
        patch(block, lambda: SKIP, down_placeholder(_res_count(block)))
    if unet.mid_block is not None:
        patch(unet.mid_block, lambda: SKIP, _same)
    for block in unet.up_blocks[:-2]:
        patch(block, lambda: SKIP, _same)
    # The cache point: where the up path re-enters the shallow layers a cached step runs.
    patch(unet.up_blocks[-2], lambda: CACHE if cache.layers == depth else SKIP, _same)
    for index in range(depth + 1):
        modules = _layer(last, index)
        for module, placeholder in modules:

            def role(index=index, is_last=module is modules[-1][0]):
                point = depth - cache.layers - 1  # the last up layer whose shallow partner is skipped
                if index < point or (index == point and not is_last):
                    return SKIP
                return CACHE if index == point else RUN

            patch(module, role, placeholder)

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
