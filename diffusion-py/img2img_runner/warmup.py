"""Warming a tuned pipeline up before the ready frame, and choosing its batch size.

A warm-up runs gray images through every path a job of the model's native size
takes, calling the pipeline as its family does (families/): compiled at once
(warm_up_tuned), or eagerly with the compilation left to a background thread
(warm_up_background, background.py). Either measures the GPU memory a batch
takes and returns the largest batch to serve.
"""

import logging
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from . import compile_cache, fp8, guidance
from .background import BackgroundCompile, switches_of
from .families import family_of
from .tuning import is_dit, tuning_of

log = logging.getLogger("img2img_runner")

# Jobs per pipeline call at most, whatever memory allows. SD 1.5 on an H100:
# 12.05 images/s at 16, 12.35 at 24, 12.30 at 31; at 32 (64 UNet rows) diffusers'
# Upsample2D takes another code path, which costs a second compilation (86 s).
BATCH_CAP = 24
# Share of the free GPU memory (after load) that batches may take; the rest is
# headroom for fragmentation, cuDNN workspaces and a second image size.
MEMORY_SHARE = 0.8
# The same for the DiT families: at their native 1024x1024 one image is 4096 tokens, matrix
# products that fill the GPU already, so a batch adds little throughput and much latency (H100,
# compiled, batch 4 against 1: FLUX.1 dev +5%, SD 3.5 Large +8%; BENCHMARKS.md).
DIT_BATCH_CAP = 8
# The side the DiT pipelines compute at when not told (their default_sample_size x 8).
DIT_NATIVE_SIDE = 1024


def native_size(pipe) -> tuple[int, int]:
    """The image size the model was trained at (512 for SD 1.5, 1024 for SDXL and the DiT families),
    on the family's grid."""
    if is_dit(pipe):
        sample = getattr(pipe, "default_sample_size", None)
        side = sample * pipe.vae_scale_factor if sample else DIT_NATIVE_SIDE
        return family_of(pipe).compute_size(side, side)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def batch_cap(pipe) -> int:
    """Jobs per call at most: the tuning's cap, else BATCH_CAP; DIT_BATCH_CAP for a DiT; 1 for a family that never batches.

    A family never batches when two jobs alike but for their id get different batch keys
    (Qwen-Image-Edit: its pipelines take one prompt a call).
    """
    family = family_of(pipe)
    image = Image.new("RGB", (64, 64))
    one, other = ({"id": name, "image": image, "steps": 2, "strength": 0.5, "guidance_scale": 1.0, "negative_prompt": None, "prompt": ""} for name in "ab")
    if family.batch_key(SimpleNamespace(**one)) != family.batch_key(SimpleNamespace(**other)):
        return 1
    return DIT_BATCH_CAP if is_dit(pipe) else tuning_of(pipe).batch_cap or BATCH_CAP


def warm_up_rows(pipe, batch: int, size: tuple[int, int]) -> list:
    """The rows of a warm-up call, as jobs: gray images, the family's default guidance.

    One denoising step (two steps at strength 0.5; a family without strength runs both), or
    as few as reach the tuning's unguided steps (the UNet on half the rows).
    """
    family = family_of(pipe)
    steps = 2 * guidance.steps_reaching_the_cut(tuning_of(pipe).guidance_share)
    image = Image.new("RGB", size, (128, 128, 128))
    row = SimpleNamespace(prompt="warm-up", negative_prompt=None, strength=0.5, steps=steps, guidance_scale=family.rules.guidance_scale.default, image=image)
    return [row] * batch


def call_rows(pipe, device: torch.device, rows: list, output_type: str = "pil"):
    """One pipeline call on these rows, as the runner makes it (the family's call, seeded generators)."""
    family = family_of(pipe)
    with torch.inference_mode():
        return pipe(
            **family.call_kwargs(pipe, rows),
            **family.image_kwargs([row.image for row in rows]),
            generator=[torch.Generator(device=device).manual_seed(index) for index in range(len(rows))],
            output_type=output_type,
            **guidance.call_kwargs(pipe, tuning_of(pipe).guidance_share),
        )


def run_batch(pipe, device: torch.device, batch: int, size: tuple[int, int]):
    """One warm-up call on gray images, PIL out."""
    return call_rows(pipe, device, warm_up_rows(pipe, batch, size))


# The fp8 tuning's calibration call: every timestep (strength 1) of a seeded noise image, two rows.
CALIBRATION_STEPS = 20
CALIBRATION_PROMPT = "a detailed photograph of a city street at dusk, people, cars, shop signs, reflections"


def calibrate_fp8(pipe, device: torch.device, size: tuple[int, int]) -> int:
    """Fix the fp8 tuning's activation scales from one eager call (fp8.calibrate); return how many layers got one."""
    family = family_of(pipe)
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    row = SimpleNamespace(prompt=CALIBRATION_PROMPT, negative_prompt=None, strength=1.0, steps=CALIBRATION_STEPS, guidance_scale=family.rules.guidance_scale.default, image=Image.fromarray(noise))
    rows = [row] * 2
    started = time.perf_counter()
    fixed = fp8.calibrate(pipe.unet, lambda: call_rows(pipe, device, rows, output_type="latent"))
    log.info("fp8: %d activation scales calibrated in %.1fs", fixed, time.perf_counter() - started)
    return fixed


def _peak_bytes(pipe, device: torch.device, batch: int, size: tuple[int, int]) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_batch(pipe, device, batch, size)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def fit_batch(pipe, device: torch.device, size: tuple[int, int], cap: int = BATCH_CAP, check: bool = True) -> int:
    """The largest batch (<= cap) whose measured memory fits in MEMORY_SHARE of the free GPU memory.

    A cap of 1 measures nothing.

    Peak memory grows linearly with the batch (the UNet's activations and the
    latents; the VAE decodes one image at a time): measured at batches 2 and 4,
    extrapolated, then checked by running the chosen batch.
    """
    if cap <= 1:
        return 1
    two, four = _peak_bytes(pipe, device, 2, size), _peak_bytes(pipe, device, 4, size)
    per_image = max((four - two) / 2, 1)
    fixed = two - 2 * per_image
    free, _total = torch.cuda.mem_get_info(device)
    budget = torch.cuda.memory_allocated(device) + MEMORY_SHARE * (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    batch = int(max(1, min(cap, (budget - fixed) // per_image)))
    log.info("memory: %.0f MiB fixed + %.0f MiB per image, budget %.0f MiB: batch %d", fixed / 2**20, per_image / 2**20, budget / 2**20, batch)
    while check and batch > 1:
        try:
            run_batch(pipe, device, batch, size)
            return batch
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
            log.warning("out of memory while checking the batch size: trying %d", batch)
    return batch


def _warm_up(pipe, device: torch.device, max_batch: int | None, size: tuple[int, int], run_largest: bool = True) -> int:
    """Batch 1, then 2 (and 4 to measure memory), then, with run_largest, the chosen batch; return it.

    The eager warm-up of a background compile skips the largest batch (seconds of cuDNN
    benchmarking before the ready frame); the first full batch pays them, and an
    out-of-memory there halves the batch (Runner._run_group).
    """
    if max_batch is not None and batch_cap(pipe) == 1:
        max_batch = 1  # the family never batches: a larger call would be refused
    started = time.perf_counter()
    run_batch(pipe, device, 1, size)
    log.info("first call at %dx%d took %.1fs", *size, time.perf_counter() - started)
    if max_batch is None:
        batch = fit_batch(pipe, device, size, cap=batch_cap(pipe), check=run_largest)
    else:
        for batch in sorted({1, 2, max_batch} if run_largest else {1, min(2, max_batch)}):
            run_batch(pipe, device, batch, size)
        batch = max_batch
    buckets = tuning_of(pipe).buckets
    if buckets:
        # The largest batch is a bucket, and every bucket's graph is recorded before the first job.
        batch = max([bucket for bucket in buckets if bucket <= batch] or [1])
        for bucket in sorted(bucket for bucket in buckets if bucket <= batch):
            run_batch(pipe, device, bucket, size)
    return batch


def _open_cache(pipe, device, max_batch, size, cache_dir):
    tuning = tuning_of(pipe)
    if not tuning.compile_mode:
        return None
    return compile_cache.open_cache(pipe, device, tuning, max_batch, size, directory=cache_dir)


def warm_up_tuned(pipe, device: torch.device, max_batch: int | None, cache_dir: str | None = None) -> int:
    """Compile and warm every path a job of the native size takes; return the max batch to serve.

    Batch 1 first (the compilation), then 2 and 4 (the memory measurement, and
    a check that the dynamic batch does not compile again), then the chosen
    largest batch.

    With a compile cache directory (cache_dir, else IMG2IMG_COMPILE_CACHE; see
    compile_cache.py) the compiled artifacts of an earlier runner with the same
    key are loaded first and what this runner compiled is saved once warm. A
    warm-up that fails with loaded artifacts moves them aside and compiles
    again from scratch with torch's caches off.
    """
    size = native_size(pipe)
    if tuning_of(pipe).fp8:
        calibrate_fp8(pipe, device, size)
    cache = _open_cache(pipe, device, max_batch, size, cache_dir)
    if cache is not None:
        cache.load()
    started = time.perf_counter()
    try:
        batch = _warm_up(pipe, device, max_batch, size)
    except Exception:
        if cache is None or cache.status != compile_cache.HIT:
            raise
        log.exception("warm-up failed with the cached compile artifacts: moving them aside, compiling from scratch")
        cache.quarantine("the warm-up failed with these artifacts loaded")
        compile_cache.compile_from_scratch()
        cache = None
        batch = _warm_up(pipe, device, max_batch, size)
    seconds = time.perf_counter() - started
    log.info("warm-up took %.1fs; compiler: %s", seconds, compile_cache.compile_stats())
    if cache is not None:
        cache.save(compile_seconds=seconds)
    return batch


def warm_up_background(pipe, device: torch.device, max_batch: int | None, cache_dir: str | None = None):
    """Warm up eagerly (recording the compiled modules' inputs), start the compile thread; return (max batch, thread).

    For a pipeline tuned with defer_compile. The eager warm-up picks the batch
    size (eager activations take more memory than compiled ones, so the choice
    is on the safe side); the thread compiles what the warm-up recorded, with
    the compile cache loaded first and saved after (background.py).
    """
    size = native_size(pipe)
    if tuning_of(pipe).fp8:
        calibrate_fp8(pipe, device, size)
    cache = _open_cache(pipe, device, max_batch, size, cache_dir)
    started = time.perf_counter()
    for switch in switches_of(pipe):
        switch.recording = True
    batch = _warm_up(pipe, device, max_batch, size, run_largest=False)
    log.info("eager warm-up took %.1fs", time.perf_counter() - started)
    compiler = BackgroundCompile(pipe, device, cache, max_batch=batch, cudnn_benchmark=tuning_of(pipe).cudnn_benchmark)
    return batch, compiler.start()


