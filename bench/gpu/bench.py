"""GPU benchmark of the img2img runner: the stages of one GPU run, see README.md.

    python3 bench/gpu/bench.py --out $OUT --budget 520

Runs stages in order, each in its own process (a crash or a compile that runs
long costs only its stage), each under a time limit from what is left of the
budget; stages that no longer fit are skipped and listed as such. Every
measurement is a JSON line in OUT/results.jsonl; OUT/summary.md holds the
tables for BENCHMARKS.md; OUT/bench.log the logs.

The job: img2img at 512x512 (SDXL: 1024x1024), 30 steps at strength 0.5 (15
denoising steps), guidance 7.5 (so the UNet runs on 2x the batch), seeded
noise images as input, on the benchmark models sd15-arch / sdxl-arch
(full-size architectures, random weights).
"""

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "diffusion-py"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

STEPS, STRENGTH, GUIDANCE = 30, 0.5, 7.5
DENOISE = int(STEPS * STRENGTH)
PROMPT = "a watercolor painting of a lighthouse"
COMPARE_BATCH = 4  # outputs compared with the baseline's at this batch size, same seeds

# name: (what, max seconds, min seconds left to start it)
STAGES = {
    "peak": ("matmul rates of this GPU", 60, 20),
    "sd15-ref": ("SD1.5 baseline outputs for the comparisons, component times, eager UNet ablation", 120, 40),
    "sd15-profile": ("SD1.5 with the runner's default tuning: batches, components, kernel profile", 330, 180),
    "sd15-nchw": ("SD1.5 default tuning but NCHW (no channels_last, no Inductor layout change)", 300, 180),
    "sd15-base": ("SD1.5 out of the box: diffusers fp16 (SDPA), PIL in/out", 150, 60),
    "sd15-eager": ("SD1.5 + fused QKV + channels_last, tensor in/out, SDPA backends", 150, 60),
    "sd15-compile": ("SD1.5 eager settings + torch.compile (default mode) UNet+VAE", 300, 150),
    "sdxl-base": ("SDXL 1024 out of the box", 150, 70),
    "sdxl-compile": ("SDXL eager settings + torch.compile (default mode)", 330, 180),
    "runner-sd15": ("python -m img2img_runner --source sd15-arch (defaults), fed over frames", 300, 120),
    "sd15-autotune": ("SD1.5 regional max-autotune-no-cudagraphs (GEMMs only), then regional default: speed and deviation", 560, 200),
    "sd15-graphs": ("SD1.5, the graphs tuning: torch.compile reduce-overhead (CUDA graphs) at bucket sizes", 300, 150),
    "sd15-tinyvae": ("SD1.5 compiled + TAESD-size tiny VAE (quality trade: README)", 240, 90),
    "sd15-bf16": ("SD1.5 eager settings in fp16, then bf16: speed and deviation", 150, 60),
    "sd15-fast": ("SD1.5 regional compile: exact, then feature caching, tiny VAE, both (the fast tuning): speed and deviation", 330, 200),
    "sd15-fp8-eager": ("SD1.5 eager, then FP8 transformer linears (eager, then each compiled): speed, deviation", 200, 60),
    "sd15-fp8": ("SD1.5 regional compile: exact, then FP8 transformer linears (the fp8 tuning), alone and with the fast trades", 330, 200),
    "sdxl-fp8-linears": ("SDXL's transformer-block linears at a guided step's shapes, fp16 against FP8, each compiled alone: the fp8 tuning's bound", 150, 70),
    "sdxl-fp8": ("SDXL regional compile: exact, then FP8 transformer linears (the fp8 tuning), alone and with the fast trades, then with dynamic activation scales", 560, 200),
    "sdxl-fast": ("SDXL regional compile: exact, then feature caching, tiny VAE, both: speed and deviation", 420, 260),
}


# ------------------------------------------------------------------ stage helpers (run in the stage process)


class Recorder:
    def __init__(self, out: pathlib.Path, stage: str):
        self.path = out / "results.jsonl"
        self.stage = stage

    def __call__(self, **record) -> None:
        record = {"stage": self.stage, **record}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print("RESULT", json.dumps(record), flush=True)


def _sync():
    import torch

    torch.cuda.synchronize()


def _inputs(batch: int, size: tuple[int, int]):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1234)
    return [Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)) for _ in range(batch)]


def call_pipe(pipe, images, tensor_io: bool, seeds=None, same_prompt: bool = False):
    """One img2img call as the runner makes it; returns HWC uint8 arrays."""
    import numpy as np
    import torch

    from img2img_runner import guidance
    from img2img_runner.runner import images_to_tensor, tensor_to_arrays
    from img2img_runner.tuning import tuning_of

    batch = len(images)
    seeds = seeds if seeds is not None else range(batch)
    with torch.inference_mode():
        output = pipe(
            prompt=[PROMPT if same_prompt else f"{PROMPT} {index}" for index in range(batch)],
            negative_prompt=[""] * batch,
            image=images_to_tensor(images, pipe.device) if tensor_io else images,
            strength=STRENGTH,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=[torch.Generator(device=pipe.device).manual_seed(seed) for seed in seeds],
            output_type="pt" if tensor_io else "pil",
            **guidance.call_kwargs(pipe, tuning_of(pipe).guidance_share),
        )
    return tensor_to_arrays(output.images) if tensor_io else [np.asarray(image) for image in output.images]


def measure(record, pipe, config: str, model: str, batches, size, tensor_io: bool, deadline: float, reps: int = 3, same_prompt: bool = False):
    """images/s per batch size: one warm-up call, then the median of reps timed calls."""
    import torch

    for batch in batches:
        if time.perf_counter() > deadline:
            print(f"{config}: out of time before batch {batch}", flush=True)
            break
        images = _inputs(batch, size)
        try:
            started = time.perf_counter()
            call_pipe(pipe, images, tensor_io, same_prompt=same_prompt)
            _sync()
            first = time.perf_counter() - started
            torch.cuda.reset_peak_memory_stats()
            times = []
            # Fewer repetitions where a call is long; at least 2.
            for _ in range(reps if first < 3 else 2):
                started = time.perf_counter()
                call_pipe(pipe, images, tensor_io, same_prompt=same_prompt)
                _sync()
                times.append(time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            record(kind="pipeline", config=config, model=model, batch=batch, size=list(size), oom=True)
            break
        median = statistics.median(times)
        record(
            kind="pipeline",
            config=config,
            model=model,
            batch=batch,
            size=list(size),
            first_call_s=round(first, 3),
            seconds_per_batch=round(median, 4),
            seconds_per_image=round(median / batch, 4),
            images_per_s=round(batch / median, 3),
            spread=round((max(times) - min(times)) / median, 3),
            peak_mib=round(torch.cuda.max_memory_allocated() / 2**20),
        )


def reference_path(model: str) -> pathlib.Path:
    # Outside OUT: only a few files may come back from the device.
    return pathlib.Path("/tmp") / f"bench-ref-{model}.npy"


def deviation(base, arrays) -> dict:
    """Max / mean absolute pixel difference, share of pixels off by more than 8, PSNR."""
    import numpy as np

    diff = np.abs(arrays.astype(np.int16) - base.astype(np.int16))
    return {
        "max_abs": int(diff.max()),
        "mean_abs": round(float(diff.mean()), 4),
        "share_over_8": round(float((diff > 8).mean()), 6),
        "psnr_db": round(float(10 * np.log10(255**2 / max(1e-12, (diff.astype(np.float64) ** 2).mean()))), 2),
    }


def compare(record, pipe, config: str, model: str, size, tensor_io: bool, batch: int = COMPARE_BATCH, save: bool = False):
    """Max / mean absolute pixel difference from the baseline's outputs (same inputs, seeds and batch size)."""
    import numpy as np

    arrays = np.stack(call_pipe(pipe, _inputs(batch, size), tensor_io))
    reference = reference_path(model)
    if save:
        np.save(reference, arrays)
        return
    if not reference.exists():
        print(f"{config}: no baseline outputs to compare with", flush=True)
        return
    record(kind="compare", config=config, model=model, batch=batch, **deviation(np.load(reference), arrays))


def unet_inputs(pipe, batch: int, size):
    """The UNet's inputs for a guided step of `batch` images (2x batch rows)."""
    import torch

    rows = 2 * batch
    latent = (size[1] // pipe.vae_scale_factor, size[0] // pipe.vae_scale_factor)
    device, dtype = pipe.device, pipe.unet.dtype
    generator = torch.Generator(device=device).manual_seed(0)
    sample = torch.randn(rows, 4, *latent, device=device, dtype=dtype, generator=generator)
    context = torch.randn(rows, 77, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype, generator=generator)
    kwargs = {}
    if pipe.unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(rows, 1280, device=device, dtype=dtype, generator=generator),
            "time_ids": torch.tensor([[size[1], size[0], 0, 0, size[1], size[0]]] * rows, device=device, dtype=dtype),
        }
    return sample, torch.tensor(500, device=device), context, kwargs


def unet_flops(pipe, size) -> float:
    """FLOPs of one UNet call for one guided image (2 rows), counted by FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sample, timestep, context, kwargs = unet_inputs(pipe, 1, size)
    counter = FlopCounterMode(display=False)
    # Compiled blocks run eagerly under the counter: in an SDXL stage that counted FLOPs with
    # them compiled, every later call ran its blocks eagerly.
    with torch.inference_mode(), torch.compiler.set_stance("force_eager"), counter:
        pipe.unet(sample, timestep, context, **kwargs)
    return float(counter.get_total_flops())


def time_unet(pipe, batch: int, size, reps: int = 10) -> float:
    """Median seconds of one UNet call (CUDA events) for a guided batch."""
    import torch

    sample, timestep, context, kwargs = unet_inputs(pipe, batch, size)
    with torch.inference_mode():
        for _ in range(3):
            pipe.unet(sample, timestep, context, **kwargs)
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            pipe.unet(sample, timestep, context, **kwargs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def record_unet(record, pipe, config: str, model: str, size, batches, flops: float, out: pathlib.Path):
    peak = _peak_tflops(out)
    for batch in batches:
        seconds = time_unet(pipe, batch, size)
        floor = flops * batch / (peak * 1e12) if peak else None
        record(
            kind="unet",
            config=config,
            model=model,
            batch=batch,
            unet_rows=2 * batch,
            step_ms=round(seconds * 1000, 3),
            tflop_per_step=round(flops * batch / 1e12, 3),
            achieved_tflops=round(flops * batch / seconds / 1e12, 1),
            floor_ms=floor and round(floor * 1000, 3),
            pct_of_peak=floor and round(100 * floor / seconds, 1),
            peak_tflops=peak,
        )


def record_step(record, pipe, config: str, size, batch: int = 24) -> None:
    """One guided UNet call's median time at `batch` (no FLOP count: for ratios within a stage)."""
    record(kind="unet", config=config, model="sd15-arch", batch=batch, unet_rows=2 * batch, step_ms=round(time_unet(pipe, batch, size) * 1000, 3))


def _peak_tflops(out: pathlib.Path) -> float | None:
    """The fp16 matmul rate measured by the peak stage (the dtype the benchmark runs in)."""
    path = out / "results.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item.get("kind") == "matmul" and item.get("dtype") == "float16":
            return item["tflops"]
    return None


def _flops_from_results(out: pathlib.Path, model: str) -> float | None:
    path = out / "results.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        item = json.loads(line)
        if item.get("kind") == "flops" and item.get("model") == model:
            return item["unet_flops_per_image_step"]
    return None


def build(source: str, tuning_name: str | None, dtype_name: str = "float16"):
    """A pipeline as the runner builds it (tuning_name None: out of the box, diffusers' defaults)."""
    import torch

    from img2img_runner.arch import build_arch_pipeline
    from img2img_runner.models import load_pipeline
    from img2img_runner.tuning import TUNINGS, apply_tuning

    device = torch.device("cuda", 0)
    dtype = getattr(torch, dtype_name)
    started = time.perf_counter()
    if tuning_name is None:
        pipe = build_arch_pipeline(source, device, dtype)
        pipe.set_progress_bar_config(disable=True)
    else:
        pipe = load_pipeline(name="bench", source=source, device=device, dtype=dtype)
        tuning = TUNINGS[tuning_name] if isinstance(tuning_name, str) else tuning_name
        apply_tuning(pipe, tuning)
    _sync()
    return pipe, time.perf_counter() - started


# ------------------------------------------------------------------ stages


def stage_peak(record, out, deadline, args):
    import torch

    record(kind="env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, diffusers=_version("diffusers"), transformers=_version("transformers"))
    n = 8192
    for dtype in (torch.float16, torch.bfloat16):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        _sync()
        times = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        record(kind="matmul", dtype=str(dtype).removeprefix("torch."), n=n, tflops=round(2 * n**3 / statistics.median(times) / 1e12, 1))
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync()
    started = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    _sync()
    record(kind="copy", tb_per_s=round(2 * 10 * 2**30 / (time.perf_counter() - started) / 1e12, 2))


def _version(name):
    try:
        import importlib.metadata as metadata

        return metadata.version(name)
    except Exception:
        return None


def _baseline(record, out, deadline, source, size, batches, unet_batches):
    model = source
    pipe, seconds = build(source, None)
    record(kind="build", config="base", model=model, seconds=round(seconds, 2))
    flops = unet_flops(pipe, size)
    record(kind="flops", model=model, unet_flops_per_image_step=flops, tflop_per_image=round(flops * DENOISE / 1e12, 2))
    measure(record, pipe, "base", model, batches, size, tensor_io=False, deadline=deadline)
    compare(record, pipe, "base", model, size, False, batch=COMPARE_BATCH if model == "sd15-arch" else 2, save=True)
    record_unet(record, pipe, "base", model, size, unet_batches, flops, out)


def time_call(fn, reps: int = 5) -> float:
    """Median seconds of fn() by CUDA events, after two warm-up calls."""
    import torch

    with torch.inference_mode():
        for _ in range(2):
            fn()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def components(record, pipe, config: str, model: str, size, batch: int = 16):
    """Time of each part of one job: text encoder (guided batch), VAE encode and decode (one image), UNet step."""
    import torch

    device, dtype = pipe.device, pipe.vae.dtype
    ids = torch.randint(0, 500, (2 * batch, 77), device=device)
    pixels = torch.rand(1, 3, size[1], size[0], device=device, dtype=dtype) * 2 - 1
    latents = torch.randn(1, 4, size[1] // 8, size[0] // 8, device=device, dtype=dtype)
    seconds = {
        "text_encoder_per_batch": time_call(lambda: pipe.text_encoder(ids)),
        "vae_encode_per_image": time_call(lambda: pipe.vae.encode(pixels)),
        "vae_decode_per_image": time_call(lambda: pipe.vae.decode(latents)),
        "unet_step_per_batch": time_unet(pipe, batch, size),
    }
    per_image = seconds["vae_encode_per_image"] + seconds["vae_decode_per_image"] + (DENOISE * seconds["unet_step_per_batch"] + seconds["text_encoder_per_batch"]) / batch
    record(kind="components", config=config, model=model, batch=batch, **{k: round(v * 1000, 3) for k, v in seconds.items()}, sum_ms_per_image=round(per_image * 1000, 2))


def kernel_profile(record, pipe, config: str, model: str, size, batch: int, top: int = 30):
    """Where the GPU time of one pipeline call goes: the top kernels by self time.

    Also the call's wall time under the profiler: kernels that fill much less than it leave the
    GPU waiting on the CPU (the profiler adds some CPU time of its own, so that share is a floor).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    images = _inputs(batch, size)
    call_pipe(pipe, images, True)
    _sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        call_pipe(pipe, images, True)
        _sync()
        wall_ms = (time.perf_counter() - started) * 1000
    rows = []
    for event in prof.key_averages():
        self_time = getattr(event, "self_device_time_total", None)
        if self_time is None:
            self_time = getattr(event, "self_cuda_time_total", 0)
        if self_time > 0:
            rows.append((event.key, self_time / 1000, event.count))
    rows.sort(key=lambda row: -row[1])
    total = sum(row[1] for row in rows)
    groups: dict[str, float] = {}
    for name, ms, _count in rows:
        groups[_kernel_group(name)] = groups.get(_kernel_group(name), 0) + ms
    record(
        kind="profile",
        config=config,
        model=model,
        batch=batch,
        gpu_ms=round(total, 1),
        wall_ms=round(wall_ms, 1),
        kernel_share_of_wall=round(total / wall_ms, 3),
        groups_ms={key: round(value, 1) for key, value in sorted(groups.items(), key=lambda item: -item[1])},
        top=[[name[:110], round(ms, 2), count] for name, ms, count in rows[:top]],
    )
    del torch


def _kernel_group(name: str) -> str:
    lower = name.lower()
    if any(key in lower for key in ("flash", "fmha", "attention", "sdpa", "cudnn_generated_fort_native_sdpa")):
        return "attention"
    if any(key in lower for key in ("conv", "implicit", "xmma", "cudnn", "winograd", "nhwc", "fprop", "dgrad")):
        return "convolution"
    if any(key in lower for key in ("gemm", "cutlass", "cublas", "sm90_", "nvjet", "matmul")):
        return "matmul"
    if lower.startswith("triton") or "triton" in lower:
        return "triton (fused elementwise / norms)"
    if any(key in lower for key in ("norm", "elementwise", "reduce", "copy", "cat", "upsample", "softmax")):
        return "aten elementwise / norms / copies"
    return "other"


def stage_sd15_ref(record, out, deadline, args):
    """Baseline outputs (for every later comparison), baseline component times, eager UNet ablation at batch 16."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    size = (512, 512)
    pipe, _ = build("sd15-arch", None)
    compare(record, pipe, "base", "sd15-arch", size, False, batch=COMPARE_BATCH, save=True)
    if _flops_from_results(out, "sd15-arch") is None:
        record(kind="flops", model="sd15-arch", unet_flops_per_image_step=unet_flops(pipe, size), tflop_per_image=None)
    components(record, pipe, "base", "sd15-arch", size)

    def unet_ms(label, backends=None):
        with sdpa_kernel(backends) if backends else contextlib.nullcontext():
            record(kind="ablation", config=label, model="sd15-arch", batch=16, unet_step_ms=round(time_unet(pipe, 16, size) * 1000, 2))

    if not args.ablation:
        return
    unet_ms("nchw")
    unet_ms("nchw+cudnn-attention", [SDPBackend.CUDNN_ATTENTION])
    torch.backends.cudnn.benchmark = True
    unet_ms("nchw+cudnn.benchmark")
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    unet_ms("channels_last+cudnn.benchmark")
    components(record, pipe, "channels_last+cudnn.benchmark", "sd15-arch", size)
    pipe.fuse_qkv_projections()
    unet_ms("channels_last+cudnn.benchmark+fused_qkv")
    unet_ms("channels_last+cudnn.benchmark+fused_qkv+cudnn-attention", [SDPBackend.CUDNN_ATTENTION])
    pipe.unet.to(memory_format=torch.contiguous_format)
    unet_ms("nchw+cudnn.benchmark+fused_qkv+cudnn-attention", [SDPBackend.CUDNN_ATTENTION])


def stage_sd15_profile(record, out, deadline, args):
    """The runner's default tuning: throughput by batch, comparison, components and a kernel profile."""
    size = (512, 512)
    pipe = _tuned(record, out, deadline, "sd15-arch", size, args.profile_batches, "compile", "runner-tuning", unet_batches=[1, 24])
    _details(record, pipe, "runner-tuning", size, deadline)


def _details(record, pipe, config: str, size, deadline: float) -> None:
    # The runner's jobs in bench runs share one prompt: check that it changes nothing.
    measure(record, pipe, config + "+same-prompt", "sd15-arch", [24], size, tensor_io=True, deadline=deadline - 20, same_prompt=True)
    if time.perf_counter() < deadline - 20:
        components(record, pipe, config, "sd15-arch", size)
    if time.perf_counter() < deadline - 15:
        kernel_profile(record, pipe, config, "sd15-arch", size, batch=16)


def stage_sd15_nchw(record, out, deadline, args):
    """The default tuning without channels_last, and Inductor's own layout choice turned off."""
    from img2img_runner.tuning import TUNINGS

    size = (512, 512)
    tuning = dataclasses.replace(TUNINGS["compile"], name="compile-nchw", channels_last=False, inductor_layout_optimization=False)
    pipe = _tuned(record, out, deadline, "sd15-arch", size, [16, 24], tuning, "compile-nchw", unet_batches=[24])
    _details(record, pipe, "compile-nchw", size, deadline)


def stage_sd15_base(record, out, deadline, args):
    _baseline(record, out, deadline, "sd15-arch", (512, 512), args.batches, [1, max(args.batches)])


def stage_sdxl_base(record, out, deadline, args):
    _baseline(record, out, deadline, "sdxl-arch", (1024, 1024), args.xl_batches, [1, max(args.xl_batches)])


def _tuned(record, out, deadline, source, size, batches, tuning, config, unet_batches=(), dtype="float16", tensor_io=True, compare_batch=COMPARE_BATCH):
    pipe, seconds = build(source, tuning, dtype)
    record(kind="build", config=config, model=source, seconds=round(seconds, 2))
    # First call at batch 1: compiles (when compiled), warms cuDNN / cuBLAS.
    started = time.perf_counter()
    call_pipe(pipe, _inputs(1, size), tensor_io)
    _sync()
    record(kind="first_call", config=config, model=source, seconds=round(time.perf_counter() - started, 2))
    measure(record, pipe, config, source, batches, size, tensor_io=tensor_io, deadline=deadline)
    if time.perf_counter() < deadline:
        compare(record, pipe, config, source, size, tensor_io, batch=compare_batch)
    flops = _flops_from_results(out, source)
    if flops and unet_batches and time.perf_counter() < deadline:
        record_unet(record, pipe, config, source, size, unet_batches, flops, out)
    return pipe


def stage_sd15_eager(record, out, deadline, args):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    pipe = _tuned(record, out, deadline, "sd15-arch", (512, 512), args.batches, "eager", "eager", unet_batches=[1, max(args.batches)])
    flops = _flops_from_results(out, "sd15-arch")
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                seconds = time_unet(pipe, 16, (512, 512))
        except RuntimeError as exc:
            record(kind="sdpa", backend=backend.name, error=str(exc)[:200])
            continue
        record(kind="sdpa", config="eager", backend=backend.name, batch=16, step_ms=round(seconds * 1000, 3), achieved_tflops=flops and round(flops * 16 / seconds / 1e12, 1))
    del torch


def _compile_tuning(mode: str, tiny_vae: bool = False):
    """The runner's default tuning with another compile mode (and maybe the tiny VAE)."""
    from img2img_runner.tuning import TUNINGS

    return dataclasses.replace(TUNINGS["compile"], name=f"compile-{mode}", compile_mode=mode, tiny_vae=tiny_vae)


def stage_sd15_compile(record, out, deadline, args):
    _tuned(record, out, deadline, "sd15-arch", (512, 512), args.batches, _compile_tuning("default"), "compile", unet_batches=[1, max(args.batches)])


def stage_sd15_autotune(record, out, deadline, args):
    """Regional max-autotune (GEMMs only: cuBLAS against Triton's templates), then the regional default, same call.

    Whole-UNet max-autotune with Triton convolution templates had not finished compiling after
    408 s (bench/NOTES.md); regional compilation tunes each distinct block once,
    and the convolutions stay cuDNN's (44% of the GPU time, already its Hopper kernels).
    """
    import gc

    import numpy as np
    import torch
    import torch._inductor.config as inductor_config

    from img2img_runner.tuning import TUNINGS

    size, images, outputs = (512, 512), _inputs(COMPARE_BATCH, (512, 512)), {}
    regional = dataclasses.replace(TUNINGS["regional"], background=False)
    inductor_config.max_autotune_gemm_backends = "ATEN,TRITON"
    inductor_config.max_autotune_conv_backends = "ATEN"
    for config, mode in (("regional-autotune-gemm", "max-autotune-no-cudagraphs"), ("regional", "default")):
        if time.perf_counter() > deadline - 120:
            print(f"{config}: out of time", flush=True)
            break
        pipe = _tuned(record, out, deadline, "sd15-arch", size, args.autotune_batches, dataclasses.replace(regional, name=config, compile_mode=mode), config)
        outputs[config] = np.stack(call_pipe(pipe, images, True))
        del pipe
        gc.collect()
        torch.cuda.empty_cache()
    if len(outputs) == 2:
        record(kind="compare_exact", config="regional-autotune-gemm", model="sd15-arch", batch=COMPARE_BATCH, against="regional", **deviation(outputs["regional"], outputs["regional-autotune-gemm"]))


def stage_sd15_graphs(record, out, deadline, args):
    from img2img_runner.tuning import TUNINGS

    # The `graphs` tuning: reduce-overhead (CUDA graphs), one graph per batch size timed (the runner pads to its buckets).
    _tuned(record, out, deadline, "sd15-arch", (512, 512), args.graph_batches, TUNINGS["graphs"], "graphs", unet_batches=[1, max(args.graph_batches)])


def stage_sd15_tinyvae(record, out, deadline, args):
    _tuned(record, out, deadline, "sd15-arch", (512, 512), [16, 24], _compile_tuning("default", tiny_vae=True), "compile+tinyvae")


def stage_sd15_bf16(record, out, deadline, args):
    """The eager tuning in fp16, then in bf16 (no compile: seconds): pipeline and UNet at batch 24, outputs compared."""
    import gc

    import numpy as np
    import torch

    images, outputs = _inputs(COMPARE_BATCH, (512, 512)), {}
    for dtype in ("float16", "bfloat16"):
        config = f"eager-{dtype}"
        pipe = _tuned(record, out, deadline, "sd15-arch", (512, 512), [24], "eager", config, dtype=dtype, compare_batch=COMPARE_BATCH)
        record_step(record, pipe, config, (512, 512))
        outputs[dtype] = np.stack(call_pipe(pipe, images, True))
        del pipe
        gc.collect()
        torch.cuda.empty_cache()
    record(kind="compare_dtype", config="bfloat16 vs float16", model="sd15-arch", batch=COMPARE_BATCH, **deviation(outputs["float16"], outputs["bfloat16"]))


def stage_sdxl_compile(record, out, deadline, args):
    _tuned(record, out, deadline, "sdxl-arch", (1024, 1024), args.xl_batches, _compile_tuning("default"), "compile", unet_batches=[1, max(args.xl_batches)], compare_batch=2)


def _fast_variants(record, out, deadline, source, size, batches, compare_batch, fp8: bool = False, profile: int = 0, only=None, profile_each: bool = False):
    """One regionally compiled pipeline, timed exact, then with each of the fast tuning's trades and both.

    The trades change no compiled block (feature caching skips blocks and layers from
    eager glue; the tiny VAE runs eagerly here, where the runner compiles its halves), so
    one compilation serves every variant. With fp8 the transformer blocks' linear layers
    are quantized first (their blocks compile again) and the variants run on that. Each
    variant's outputs are compared with the exact ones of this same pipeline (same inputs,
    seeds and batch); feature caching behind the tiny VAE with the tiny VAE's own exact
    outputs. With random weights the deviation says nothing about visual quality: it
    only bounds how far the pixels move. profile: a kernel profile of the exact pipeline at
    that batch (0: none).
    """
    import numpy as np
    import torch

    from img2img_runner import deepcache, graphs
    from img2img_runner.arch import tiny_vae_like
    from img2img_runner.fp8 import quantize_linears, use_dynamic_scales
    from img2img_runner.tuning import TUNINGS
    from img2img_runner.warmup import calibrate_fp8

    fast = TUNINGS["fast"]
    pipe = _tuned(record, out, deadline, source, size, batches, dataclasses.replace(TUNINGS["regional"], background=False), "regional", compare_batch=compare_batch)
    images = _inputs(compare_batch, size)
    exact = np.stack(call_pipe(pipe, images, True))
    # Where the exact pipeline's GPU time goes (no compile of its own: the regional one serves).
    if profile and not fp8 and time.perf_counter() < deadline - 60:
        kernel_profile(record, pipe, "regional", source, size, batch=profile)
    if fp8:
        record(kind="fp8", model=source, linears=quantize_linears(pipe.unet))
        started = time.perf_counter()
        record(kind="fp8_calibration", model=source, static_scales=calibrate_fp8(pipe, pipe.device, size), seconds=round(time.perf_counter() - started, 2))
        started = time.perf_counter()
        call_pipe(pipe, _inputs(1, size), True)
        _sync()
        record(kind="first_call", config="fp8", model=source, seconds=round(time.perf_counter() - started, 2))
    graphed = graphs.install(pipe.unet)  # inside feature caching's wrapper, as apply_tuning installs it
    cache = deepcache.install(pipe.unet, pipe.scheduler, fast.feature_cache, fast.feature_cache_layers)
    graphed.cache = cache
    kl_vae = pipe.vae
    small_vae = tiny_vae_like(kl_vae, pipe.device, pipe.dtype).to(memory_format=torch.channels_last)

    tuning = pipe._img2img_tuning

    outputs_of = {}

    def variant(config, interval, vae, layers=fast.feature_cache_layers, reference=None, share=1.0, with_graphs=False):
        cache.enabled, cache.interval, cache.layers = interval > 0, max(interval, 2), layers
        if with_graphs:
            graphed.enable()  # captures at the variant's first call (measure's warm-up call)
        graphed.enabled = with_graphs
        pipe._img2img_tuning = dataclasses.replace(tuning, guidance_share=share)  # read by call_pipe
        pipe.vae = vae
        pipe.register_modules(vae=vae)
        if time.perf_counter() > deadline - 15:
            return
        measure(record, pipe, config, source, batches, size, tensor_io=True, deadline=deadline)
        if profile_each:
            kernel_profile(record, pipe, config, source, size, batch=max(batches), top=10)
        against = "exact" if reference is None else "tiny-vae"
        outputs = np.stack(call_pipe(pipe, images, True))
        record(kind="compare_exact", config=config, model=source, batch=compare_batch, against=against, **deviation(exact if reference is None else reference, outputs))
        without = outputs_of.get(config.removesuffix(GRAPHS_LABEL))
        if with_graphs and without is not None:
            record(kind="compare_exact", config=config, model=source, batch=compare_batch, against="without graphs", captures=graphed.captures, **deviation(without, outputs))
        outputs_of[config] = outputs

    fc = f"feature-cache-{fast.feature_cache}"
    if fp8:
        # Static activation scales (the fp8 tuning's), then the trades on top (no recompile), then
        # dynamic scales (a recompile): the cost of a reduction before every product.
        variant("fp8", 0, kl_vae)
        if profile and time.perf_counter() < deadline - 60:
            kernel_profile(record, pipe, "fp8", source, size, batch=profile)
        variant(f"fp8 + {fc}", fast.feature_cache, kl_vae)
        variant(f"fp8 + fast ({fc} + tiny-vae)", fast.feature_cache, small_vae)
        use_dynamic_scales(pipe.unet)
        variant("fp8, dynamic activation scales", 0, kl_vae)
        return
    # (interval, layers, tiny VAE, guidance share): a cached step runs `layers` shallow layers
    # (deepcache.py); the first down block's depth is the whole block; guidance in that share of
    # the steps only (guidance.py).
    depth = len(pipe.unet.down_blocks[0].resnets)
    chosen = only or [
        *((interval, layers, False, 1.0, False) for interval, layers in ((3, 1), (3, depth), (5, 1), (4, 1), (2, 1))),
        (0, 1, True, 1.0, False),
        *((interval, layers, True, 1.0, False) for interval, layers in ((3, 1), (3, depth), (2, 1), (4, 1), (5, 1), (2, depth), (5, depth))),
    ]
    tunings = {(t.feature_cache, t.feature_cache_layers, round(t.guidance_share, 2)): t.name for t in TUNINGS.values() if t.feature_cache and t.tiny_vae}
    exact_tiny = None
    for interval, layers, tiny, share, with_graphs in chosen:
        label = (f"feature-cache-{interval} layers {layers}" if interval else "") + (f" + guidance {share:.2f}" if share < 1 else "")
        label = label.lstrip(" +") or "exact"
        if not tiny:
            variant(label + (GRAPHS_LABEL if with_graphs else ""), interval, kl_vae, layers, share=share, with_graphs=with_graphs)
            continue
        if exact_tiny is None:
            # The tiny VAE's own exact outputs: what the other trades change behind it (a random tiny
            # VAE against the KL VAE would only compare two unrelated decoders).
            variant("tiny-vae", 0, small_vae)
            exact_tiny = np.stack(call_pipe(pipe, images, True))
        if interval or share < 1:
            name = tunings.get((interval, layers, round(share, 2)))
            config = f"{label} + tiny-vae" + (f" (the {name} tuning)" if name else "") + (GRAPHS_LABEL if with_graphs else "")
            variant(config, interval, small_vae, layers, reference=exact_tiny, share=share, with_graphs=with_graphs)
    # The UNet's FLOPs, to set the profile against the chip's rate: last, as no variant runs after it.
    if profile and _flops_from_results(out, source) is None:
        flops = unet_flops(pipe, size)
        record(kind="flops", model=source, unet_flops_per_image_step=flops, tflop_per_image=round(flops * DENOISE / 1e12, 2))


def stage_sd15_fp8_eager(record, out, deadline, args):
    """The eager tuning, then its transformer linears in FP8, then each of them compiled (seconds).

    Eager FP8 runs the activations' scaling and casting as separate kernels, which a compiled
    pipeline fuses: a floor for what FP8 gives, not its compiled speed.
    """
    import numpy as np
    import torch._dynamo.config as dynamo_config

    from img2img_runner.fp8 import Fp8Linear, quantize_linears

    size, images = (512, 512), _inputs(COMPARE_BATCH, (512, 512))
    pipe = _tuned(record, out, deadline, "sd15-arch", size, [24], "eager", "eager", compare_batch=COMPARE_BATCH)
    exact = np.stack(call_pipe(pipe, images, True))

    def timed(config):
        record_step(record, pipe, config, size)
        measure(record, pipe, config, "sd15-arch", [24], size, tensor_io=True, deadline=deadline)
        record(kind="compare_exact", config=config, model="sd15-arch", batch=COMPARE_BATCH, **deviation(exact, np.stack(call_pipe(pipe, images, True))))

    record_step(record, pipe, "eager", size)
    record(kind="fp8", model="sd15-arch", linears=quantize_linears(pipe.unet))
    timed("eager + fp8 linears")
    # Each FP8 linear layer compiled on its own: scaling and casting fused, the rest eager.
    for name in ("recompile_limit", "cache_size_limit"):  # one code object (Linear.forward), many shapes
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, 256)
    started = time.perf_counter()
    for module in pipe.unet.modules():
        if isinstance(module, Fp8Linear):
            module.compile()
    timed("eager + compiled fp8 linears")
    record(kind="first_call", config="eager + compiled fp8 linears", model="sd15-arch", seconds_including_timing=round(time.perf_counter() - started, 2))


def stage_sd15_fp8(record, out, deadline, args):
    _fast_variants(record, out, deadline, "sd15-arch", (512, 512), [24], COMPARE_BATCH, fp8=True)


def stage_sd15_fast(record, out, deadline, args):
    only = _variants(args.fast_variants)
    _fast_variants(record, out, deadline, "sd15-arch", (512, 512), args.fast_batches, COMPARE_BATCH, profile=0 if only else 16, only=only, profile_each=args.profile_variants)


def stage_sdxl_fp8_linears(record, out, deadline, args):
    """The linears the fp8 tuning converts, timed one by one at the shapes of one guided SDXL step
    (batch 8, 1024x1024; shapes and counts recorded from a real UNet call): fp16 (cuBLAS), the
    FP8 product alone (input cast beforehand), and the tuning's Fp8Linear compiled on its own
    (the input's scaling and cast fused by Inductor). Seconds of compiling where the whole
    UNet's takes minutes; with the kernel profile's matmul share it bounds what the fp8
    tuning can give (bench/NOTES.md).
    """
    import collections

    import torch
    import torch._dynamo.config as dynamo_config

    from img2img_runner.fp8 import E4M3, Fp8Linear, fp8_linears

    for name in ("recompile_limit", "cache_size_limit"):  # one code object (Fp8Linear.forward), many shapes
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, 256)
    batch, size = 8, (1024, 1024)
    pipe, seconds = build("sdxl-arch", "eager")
    record(kind="build", config="eager", model="sdxl-arch", seconds=round(seconds, 2))
    shapes = collections.Counter()

    def count(module, inputs, output):
        shapes[(inputs[0].numel() // module.in_features, module.in_features, module.out_features, module.bias is not None)] += 1

    hooks = [linear.register_forward_hook(count) for _, _, linear in fp8_linears(pipe.unet)]
    sample, timestep, context, kwargs = unet_inputs(pipe, batch, size)
    with torch.inference_mode():
        pipe.unet(sample, timestep, context, **kwargs)
    for hook in hooks:
        hook.remove()
    step_ms = time_unet(pipe, batch, size, reps=3) * 1000
    record(kind="unet", config="eager", model="sdxl-arch", batch=batch, step_ms=round(step_ms, 1), linears=sum(shapes.values()), distinct_shapes=len(shapes))
    del pipe
    torch.cuda.empty_cache()
    totals = collections.Counter()
    with torch.inference_mode():
        for (rows, k, n, bias), calls in sorted(shapes.items(), key=lambda item: -item[0][0] * item[0][1] * item[0][2] * item[1]):
            if time.perf_counter() > deadline - 10:
                record(kind="fp8_linear", skipped=[rows, k, n])
                continue
            linear = torch.nn.Linear(k, n, bias=bias, device="cuda", dtype=torch.float16)
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            quantized = Fp8Linear(linear)
            compiled = torch.compile(quantized)
            x_fp8, x_scale = x.to(E4M3), torch.tensor(1.0, device="cuda")
            weight = quantized.weight_fp8.t()
            times = {  # milliseconds
                "fp16": 1000 * time_call(lambda: linear(x), reps=20),
                "fp8_product": 1000 * time_call(lambda: torch._scaled_mm(x_fp8, weight, scale_a=x_scale, scale_b=quantized.weight_scale, bias=quantized.bias, out_dtype=torch.float16), reps=20),
                "fp8_linear": 1000 * time_call(lambda: compiled(x), reps=20),
            }
            for key, ms in times.items():
                totals[key] += ms * calls
            record(kind="fp8_linear", rows=rows, k=k, n=n, calls=calls, **{f"{key}_ms": round(ms, 4) for key, ms in times.items()}, tflops_fp16=round(2 * rows * k * n / times["fp16"] / 1e9, 1), tflops_fp8_product=round(2 * rows * k * n / times["fp8_product"] / 1e9, 1))
    record(kind="fp8_linears_total", model="sdxl-arch", batch=batch, eager_step_ms=round(step_ms, 1), **{f"{key}_ms_per_step": round(ms, 1) for key, ms in totals.items()})


def stage_sdxl_fp8(record, out, deadline, args):
    _fast_variants(record, out, deadline, "sdxl-arch", (1024, 1024), [8], 2, fp8=True, profile=8 if args.profile_variants else 0)


def stage_sdxl_fast(record, out, deadline, args):
    _fast_variants(record, out, deadline, "sdxl-arch", (1024, 1024), [8], 2, profile=8, only=_variants(args.fast_variants), profile_each=args.profile_variants)


GRAPHS_LABEL = " + CUDA graphs"


def _variants(text: str | None):
    """--fast-variants "3:1,5:1:tiny,5:1:tiny:g0.34:graphs": (interval, layers, tiny VAE, guidance share, CUDA graphs); None: the whole list."""
    if not text:
        return None
    chosen = []
    for part in text.split(","):
        interval, layers, *flags = part.split(":")
        shares = [float(flag[1:]) for flag in flags if flag.startswith("g") and flag != "graphs"]
        chosen.append((int(interval), int(layers), "tiny" in flags, shares[0] if shares else 1.0, "graphs" in flags))
    return chosen


def stage_runner_sd15(record, out, deadline, args):
    """The real runner process with its defaults, fed over frames: start cost, then saturated images/s."""
    from feed import RunnerClient, collect, noise_png, send_jobs, throughput

    client = RunnerClient(["--model", "sd15", "--source", "sd15-arch", *args.runner_args], log_path=str(out / "runner.log"))
    try:
        ready = client.wait_ready(timeout=max(10, deadline - time.perf_counter() - 30))
        record(kind="runner_ready", **{k: v for k, v in ready.items() if k not in ("v", "type")})
        max_batch = ready["max_batch"]
        png = noise_png((512, 512))
        for rounds, distinct in ((1, False), (args.runner_rounds, False), (args.runner_rounds, True)):
            if time.perf_counter() > deadline - 20:
                break
            ids = send_jobs(client, f"r{rounds}{distinct}", rounds * max_batch, png, distinct_prompts=distinct)
            run = collect(client, ids, timeout=max(10, deadline - time.perf_counter()))
            record(
                kind="runner",
                config="runner-default" + ("+distinct-prompts" if distinct else ""),
                compute_s=run["compute_s"],
                pixels=run["pixels"],
                model="sd15-arch",
                jobs=len(ids),
                max_batch=max_batch,
                errors=len(run["errors"]),
                sizes=run["sizes"],
                batch_sizes=sorted(set(run["batch_sizes"])),
                **throughput(run, first_batch=min(max_batch, len(ids))),
            )
    finally:
        client.close()


STAGE_FUNCS = {name: globals()["stage_" + name.replace("-", "_")] for name in STAGES}


# ------------------------------------------------------------------ orchestration


def run_stages(args, stages: dict = STAGES, script: str = __file__, summary=None) -> None:
    """Each of args.stages in its own process (`script --stage NAME`), under the time left of the budget;
    then the summary (summary(out) -> markdown, default: this file's tables) in OUT/summary.md."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_CACHE_DIR": args.cache_dir, "TRITON_CACHE_DIR": args.cache_dir + "/triton"}
    log = open(out / "bench.log", "ab")
    statuses = []
    sampler = _sample_gpu(out / "gpu.csv")
    for name in args.stages:
        _what, max_seconds, min_seconds = stages[name]
        left = deadline - time.perf_counter()
        if left < min_seconds:
            statuses.append((name, "skipped (budget)", 0.0))
            print(f"=== {name}: skipped, {left:.0f}s left < {min_seconds}s", flush=True)
            continue
        limit = min(max_seconds, left)
        print(f"=== {name}: up to {limit:.0f}s ({left:.0f}s left)", flush=True)
        started = time.perf_counter()
        command = [sys.executable, script, "--stage", name, "--stage-seconds", str(limit - 5), *args.passthrough]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        # Reading the output blocks, so the time limit is a timer that kills the stage.
        timer = threading.Timer(limit, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                text = line.decode("utf-8", "replace")
                if text.startswith(("RESULT", "===", "Traceback")) or "Error" in text:
                    print(f"[{name}] {text.rstrip()[:400]}", flush=True)
            code = proc.wait(timeout=max(1, limit - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        finally:
            timer.cancel()
        statuses.append((name, f"exit {code}", time.perf_counter() - started))
        print(f"=== {name}: exit {code} after {time.perf_counter() - started:.0f}s", flush=True)
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        for name, status, seconds in statuses:
            handle.write(json.dumps({"stage": name, "kind": "status", "status": status, "seconds": round(seconds, 1)}) + "\n")
    if sampler is not None:
        sampler.terminate()
    text = (summary or summarize)(out)
    (out / "summary.md").write_text(text)
    print(text, flush=True)
    if args.pack_cache:
        pack_cache(args.cache_dir, out / "inductor-cache.tar.gz")


def _sample_gpu(path: pathlib.Path):
    """nvidia-smi readings every second (clocks, power, temperature, use) while the stages run."""
    fields = "timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,memory.used,clocks_throttle_reasons.active"
    try:
        return subprocess.Popen(["nvidia-smi", f"--query-gpu={fields}", "--format=csv", "-lms", "1000"], stdout=open(path, "w"), stderr=subprocess.DEVNULL)
    except OSError:
        return None


def pack_cache(cache_dir: str, target: pathlib.Path) -> None:
    import tarfile

    if not os.path.isdir(cache_dir):
        return
    with tarfile.open(target, "w:gz") as tar:
        tar.add(cache_dir, arcname="inductor-cache")
    size = target.stat().st_size
    print(f"inductor cache: {size / 2**20:.1f} MiB", flush=True)
    if size > 15 * 2**20:
        target.unlink()
        print("inductor cache too large to bring back; dropped", flush=True)


def summarize(out: pathlib.Path) -> str:
    path = out / "results.jsonl"
    items = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    lines = []
    env = next((item for item in items if item.get("kind") == "env"), {})
    rates = {item["dtype"]: item["tflops"] for item in items if item.get("kind") == "matmul"}
    lines.append(f"GPU: {env.get('gpu')}, torch {env.get('torch')}, diffusers {env.get('diffusers')}; matmul 8192^3: {rates} TFLOP/s")
    for model in ("sd15-arch", "sdxl-arch"):
        rows = [item for item in items if item.get("kind") == "pipeline" and item.get("model") == model]
        if not rows:
            continue
        configs = list(dict.fromkeys(item["config"] for item in rows))
        batches = sorted({item["batch"] for item in rows})
        lines += ["", f"### {model}: images/s (seconds per image) by batch size", ""]
        lines.append("| config | " + " | ".join(f"b{batch}" for batch in batches) + " |")
        lines.append("|---|" + "---|" * len(batches))
        for config in configs:
            cells = []
            for batch in batches:
                hit = next((item for item in rows if item["config"] == config and item["batch"] == batch), None)
                if hit is None:
                    cells.append("")
                elif hit.get("oom"):
                    cells.append("OOM")
                else:
                    cells.append(f"{hit['images_per_s']:.2f} ({hit['seconds_per_image']:.3f})")
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
    unet = [item for item in items if item.get("kind") == "unet"]
    if unet:
        lines += ["", "### UNet step (one guided call) vs FLOP floor", "", "| model | config | images | ms | TFLOP | TFLOP/s | floor ms | % of peak |", "|---|---|---|---|---|---|---|---|"]
        for item in unet:
            cells = [item.get(key, "") for key in ("model", "config", "batch", "step_ms", "tflop_per_step", "achieved_tflops", "floor_ms", "pct_of_peak")]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    other = [item for item in items if item.get("kind") in ("compare", "compare_exact", "compare_dtype", "fp8", "first_call", "build", "sdpa", "runner_ready", "runner", "status", "copy", "flops", "components", "ablation", "profile")]
    if other:
        lines += ["", "### Other records", ""]
        lines += [f"- {json.dumps(item)}" for item in other]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--budget", type=float, default=520, help="seconds for all stages together")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--xl-batches", default="1,4,8")
    parser.add_argument("--autotune-batches", default="1,16,32")
    parser.add_argument("--graph-batches", default="1,8,24")
    parser.add_argument("--fast-variants", help='sd15-fast / sdxl-fast: only these, e.g. "5:1,3:1:tiny,5:1:tiny:g0.67" (interval:layers[:tiny][:gSHARE][:graphs]; interval 0: no feature caching; graphs: UNet calls replayed from CUDA graphs)')
    parser.add_argument("--fast-batches", default="24", help="sd15-fast: the batch sizes each variant is timed at")
    parser.add_argument("--profile-variants", action="store_true", help="sd15-fast / sdxl-fast: a kernel profile of each variant at its batch (GPU time against wall time)")
    parser.add_argument("--profile-batches", default="1,4,8,16,24")
    parser.add_argument("--ablation", action="store_true", help="sd15-ref: also time the eager UNet under each switch")
    parser.add_argument("--runner-rounds", type=int, default=4, help="saturated run: this many max batches of jobs")
    parser.add_argument("--runner-args", default="", help="extra runner flags, space-separated")
    parser.add_argument("--cache-dir", default="/tmp/inductor-cache")
    parser.add_argument("--pack-cache", action="store_true", help="tar the Inductor cache into OUT (to carry to a later call)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--stage-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.xl_batches = [int(x) for x in args.xl_batches.split(",")]
    args.autotune_batches = [int(x) for x in args.autotune_batches.split(",")]
    args.graph_batches = [int(x) for x in args.graph_batches.split(",")]
    args.profile_batches = [int(x) for x in args.profile_batches.split(",")]
    args.fast_batches = [int(x) for x in args.fast_batches.split(",")]
    args.runner_args = args.runner_args.split()
    if args.stage:
        deadline = time.perf_counter() + args.stage_seconds
        STAGE_FUNCS[args.stage](Recorder(pathlib.Path(args.out), args.stage), pathlib.Path(args.out), deadline, args)
        return
    args.stages = [name for name in args.stages.split(",") if name]
    unknown = [name for name in args.stages if name not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    # What the stage processes get again: every option but --stages / --budget / --pack-cache.
    args.passthrough = [
        "--out", args.out,
        "--batches", ",".join(map(str, args.batches)),
        "--xl-batches", ",".join(map(str, args.xl_batches)),
        "--autotune-batches", ",".join(map(str, args.autotune_batches)),
        "--graph-batches", ",".join(map(str, args.graph_batches)),
        "--profile-batches", ",".join(map(str, args.profile_batches)),
        "--fast-batches", ",".join(map(str, args.fast_batches)),
        "--runner-rounds", str(args.runner_rounds),
        "--runner-args=" + " ".join(args.runner_args),
        "--cache-dir", args.cache_dir,
        *(["--ablation"] if args.ablation else []),
        *(["--fast-variants", args.fast_variants] if args.fast_variants else []),
        *(["--profile-variants"] if args.profile_variants else []),
    ]  # fmt: skip
    run_stages(args)


if __name__ == "__main__":
    main()
