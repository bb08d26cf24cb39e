"""Classifier-free guidance in a call's first steps only (the opt-in `fastest` tuning).

A guided step runs the UNet on twice the jobs: an unconditional and a
conditional row each. Kynkäänniemi et al. 2024 ("Applying guidance in a
limited interval improves sample and distribution quality in diffusion
models") found the last, least noisy steps gain least from guidance, and
diffusers documents the same cut as dynamic classifier-free guidance
(callback_on_step_end). After the first `share` of a call's steps the
unconditional rows are dropped: the remaining steps run the conditional
branch alone, on half the rows.

It trades exactness for speed: outputs differ from the exact pipeline's on the
same seeds (bench/gpu measures by how much). With the benchmark models' random
weights that deviation says nothing about visual quality.
"""

import math

# The conditioning a pipeline's loop reuses at every step, one row per UNet row
# (SD 1.5: the prompt embeddings; SDXL: also the pooled embeddings and time ids).
CONDITIONING = ("prompt_embeds", "add_text_embeds", "add_time_ids")


def guided_steps(total: int, share: float) -> int:
    """How many of a call's `total` steps keep guidance: at least one."""
    return max(1, math.ceil(total * share - 1e-9))


def steps_reaching_the_cut(share: float) -> int:
    """The fewest denoising steps of a call that run an unguided one (a warm-up must compile that path)."""
    steps = 1
    while share < 1 and guided_steps(steps, share) >= steps:
        steps += 1
    return steps


def step_inputs(pipe, share: float) -> list[str]:
    """The tensors the cut needs from the pipeline's step-end callback; none when guidance is never cut.

    A pipeline that does not hand its prompt embeddings to the callback is never cut: the
    loop would go on with guided conditioning and unguided latents.
    """
    offered = getattr(pipe, "_callback_tensor_inputs", ())
    if share >= 1 or "prompt_embeds" not in offered:
        return []
    return [name for name in CONDITIONING if name in offered]


def _after_step(pipe, names: list[str], share: float, step_index: int, tensors: dict) -> dict:
    """The conditioning (names, from step_inputs) the loop goes on with: its conditional half after the last guided step."""
    if not names or not pipe.do_classifier_free_guidance or step_index + 1 != guided_steps(pipe.num_timesteps, share):
        return {}
    # do_classifier_free_guidance turns False for the rest of this call; the next call sets its own scale.
    pipe._guidance_scale = 0.0
    # Guided rows are [unconditional, conditional] (diffusers concatenates them in that order).
    return {name: tensors[name].chunk(2)[1] for name in names}


def call_kwargs(pipe, share: float, on_step=None, also: tuple[str, ...] = ()) -> dict:
    """callback_on_step_end and its tensor inputs for a pipeline call: the cut at `share`, then
    on_step(pipe, step_index, tensors), which also gets the tensors named in `also` that the
    pipeline hands to its callback (the latents, for previews)."""
    inputs = step_inputs(pipe, share)
    offered = getattr(pipe, "_callback_tensor_inputs", ())
    extra = [name for name in also if name in offered and name not in inputs]
    if not inputs and on_step is None:
        return {}

    def on_step_end(pipe, step_index, timestep, tensors):
        changed = _after_step(pipe, inputs, share, step_index, tensors)
        if on_step is not None:
            on_step(pipe, step_index, tensors)
        return changed

    return {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": inputs + extra}
