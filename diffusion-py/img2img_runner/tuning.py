"""The fast CUDA path for full-size Stable Diffusion pipelines (SD 1.5, SDXL and their kin).

Measured on an H100 against the out-of-the-box pipeline (bench/gpu/;
BENCHMARKS.md, the GPU sections), SD 1.5 img2img 512x512, 15 steps:

- what pays: torch.compile (Inductor, default mode) of the UNet and of the VAE
  encoder and decoder (1.7x at batch 16-32: fused GroupNorm / SiLU / residual
  adds, fewer launches), and batching (the runner's job); the runner's tensor
  I/O and threaded PNG encoding keep the CPU off the GPU's critical path;
- measured neutral, kept (the configuration the runner was measured with):
  fused QKV projections, cuDNN attention first, cudnn.benchmark,
  channels_last under the compiler (in eager mode channels_last was slower,
  so the `eager` tuning leaves it out);
- not the default: max-autotune (its first call compiled for over 400 s on
  the H200), CUDA graphs (the `graphs` tuning: no gain at batch 24 on the
  H200), bf16 (+2% on the H200, but pixels up to 14 off fp16's: not exact),
  and the trades of the opt-in `fast`, `faster` and `fastest` tunings (feature
  caching, the tiny VAE, guidance in the first steps only: not exact,
  BENCHMARKS.md).
The UNet's batch dimension is compiled dynamic, so one compilation serves
batch sizes 1 to 31; a new image size compiles again on its first job. By
default the compilation runs in a background thread behind an eager warm-up
(background.py): the runner takes jobs in seconds and switches to the compiled
path when it is ready.

Nothing here runs for the CPU path or for the `tiny` model: they stay exactly
as models.load_pipeline makes them.
"""

import logging
import os
import time
from dataclasses import dataclass

import torch
from PIL import Image

from . import guidance

log = logging.getLogger("img2img_runner")

# Jobs per pipeline call at most, whatever memory allows. SD 1.5 on an H100:
# 12.05 images/s at 16, 12.35 at 24, 12.30 at 31; at 32 (64 UNet rows) diffusers'
# Upsample2D takes another code path, which costs a second compilation (86 s).
BATCH_CAP = 24
# Share of the free GPU memory (after load) that batches may take; the rest is
# headroom for fragmentation, cuDNN workspaces and a second image size.
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class Tuning:
    name: str
    fuse_qkv: bool = False
    channels_last: bool = False
    compile_mode: str | None = None  # torch.compile mode for the UNet and VAE; None: eager
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms per shape
    cudnn_attention: bool = False  # SDPA tries cuDNN's attention first (then flash, efficient, math)
    inductor_layout_optimization: bool = True  # Inductor may switch convolutions to channels_last itself
    tiny_vae: bool = False  # benchmark only: swaps the KL VAE for a TAESD-sized AutoencoderTiny
    # Regional compilation: compile the repeated blocks (REGION_CLASSES) one by one instead of
    # the whole UNet and VAE; identical blocks share one compiled graph, so less is compiled.
    regional: bool = False
    # Report ready after an eager warm-up and compile in a background thread (background.py).
    background: bool = False
    # DeepCache interval (deepcache.py): every Nth denoising step runs the whole UNet; 0: off.
    feature_cache: int = 0
    # Shallow layers a cached step still runs (deepcache.py): 1 is DeepCache's shallowest branch.
    feature_cache_layers: int = 1
    compile_backend: str = "inductor"  # tests use "eager" (Dynamo alone) on CPU
    # Batch sizes every pipeline call is padded up to (Runner): CUDA graphs record one graph per size.
    buckets: tuple[int, ...] = ()
    # Share of a call's denoising steps that keep classifier-free guidance (guidance.py); 1: all of them.
    guidance_share: float = 1.0

    def __post_init__(self):
        if not 0 < self.guidance_share <= 1:
            raise ValueError(f"guidance_share is a share of the steps in (0, 1], not {self.guidance_share}")


EXACT = dict(fuse_qkv=True, channels_last=True, compile_mode="default", cudnn_benchmark=True, cudnn_attention=True)

FAST = dict(EXACT, regional=True, background=True, feature_cache=3, feature_cache_layers=1, tiny_vae=True)
FASTER = dict(FAST, feature_cache=5)

TUNINGS = {
    # The pipeline as diffusers builds it (fp16, SDPA): the baseline.
    "off": Tuning("off"),
    # No compiler: starts in seconds. NCHW: in eager mode channels_last made the
    # UNet step 12% and the VAE 25% slower on the H100 (bench/gpu, sd15-ref).
    "eager": Tuning("eager", fuse_qkv=True, cudnn_benchmark=True, cudnn_attention=True),
    # The default on CUDA: the best measured settings, ready after an eager warm-up, compiled behind it.
    "compile": Tuning("compile", **EXACT, background=True),
    # The same, compiled before the ready frame (benchmarks measure a cold compile with it).
    "compile-first": Tuning("compile-first", **EXACT),
    # The same settings, compiling the repeated blocks instead of whole networks (a shorter cold compile).
    "regional": Tuning("regional", **EXACT, regional=True, background=True),
    # Inductor also benchmarks Triton matmul templates against cuBLAS: minutes more of compilation.
    "autotune": Tuning("autotune", **{**EXACT, "compile_mode": "max-autotune-no-cudagraphs"}, background=True),
    # CUDA graphs (Inductor's reduce-overhead) over padded batch buckets: launch overhead gone, one
    # graph per bucket recorded in the warm-up. Compiled first: a capture must not race eager work.
    # H200: 0.99x the compiled throughput at batch 24 (launches were not the limit there).
    "graphs": Tuning("graphs", **{**EXACT, "compile_mode": "reduce-overhead"}, buckets=(1, 2, 4, 8, 16, 24)),
    # Opt-in per model (model_names.txt `tuning=fast`): not exact. Deep features reused for two
    # steps of three (DeepCache's shallowest branch), and a TAESD-sized tiny VAE; bench/gpu
    # measures the speed-up and the deviation (BENCHMARKS.md).
    "fast": Tuning("fast", **FAST),
    # The same trade pushed further: one full step in five (3 of 15 denoising steps).
    "faster": Tuning("faster", **FASTER),
    # And guidance in the first third of the steps only (guidance.py): the last ten of 15 run the
    # conditional branch alone, on half the UNet rows (in the last third only, it gained nothing).
    "fastest": Tuning("fastest", **FASTER, guidance_share=1 / 3),
}
DEFAULT_TUNING = "compile"


def tuning_of(pipe) -> Tuning:
    """The Tuning apply_tuning gave this pipeline; TUNINGS["off"] for one it never tuned."""
    return getattr(pipe, "_img2img_tuning", None) or TUNINGS["off"]


def wants_tuning(model: str, device: torch.device, pipe) -> bool:
    """Only full-size UNet pipelines on CUDA are tuned; the tiny model and the CPU path never are."""
    return device.type == "cuda" and model != "tiny" and hasattr(pipe, "unet") and hasattr(pipe, "vae")


# Blocks compiled one by one under the `regional` tuning. In SD 1.5's UNet the 16
# Transformer2DModel and 22 ResnetBlock2D instances come in about 4 and 14
# distinct shapes; the VAE's encoder and decoder repeat ResnetBlock2D too.
# The glue between them (conv_in/out, down/upsamplers, skip concatenations,
# time embedding) stays eager. A tiny VAE's two halves (plain convolutions
# and ReLUs, no repeated block worth sharing) are compiled whole.
REGION_CLASSES = ("Transformer2DModel", "ResnetBlock2D", "EncoderTiny", "DecoderTiny")
# Distinct shapes per compiled code object (ResnetBlock2D: UNet and VAE together)
# before Dynamo would give up and run a block eagerly.
REGION_RECOMPILE_LIMIT = 128


def compile_targets(pipe, tuning: Tuning) -> list:
    """The modules whose forwards are compiled: the UNet and the VAE halves, or their repeated blocks."""
    if not tuning.regional:
        targets = [pipe.unet]
        if hasattr(pipe.vae, "encoder"):
            targets += [pipe.vae.encoder, pipe.vae.decoder]
        return targets
    return [module for root in (pipe.unet, pipe.vae) for module in root.modules() if type(module).__name__ in REGION_CLASSES]


def _regional_dynamo_config() -> None:
    import torch._dynamo.config as dynamo_config

    # Only the marked batch dimension is dynamic: a block of another width
    # compiles its own static graph instead of turning channels dynamic.
    dynamo_config.automatic_dynamic_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), REGION_RECOMPILE_LIMIT))


def tiny_vae_like(vae, device: torch.device, dtype: torch.dtype):
    """A TAESD-architecture AutoencoderTiny with seeded random weights (the benchmark models' tiny VAE)."""
    from diffusers import AutoencoderTiny

    from .arch import rng_devices

    with torch.random.fork_rng(devices=rng_devices(device)), torch.device(device):
        torch.manual_seed(0)
        tiny = AutoencoderTiny(latent_channels=vae.config.latent_channels).to(dtype=dtype).eval()
    return tiny


# A model folder's tiny VAE (TAESD weights for its latent space, e.g. madebyollin/taesd for SD 1.5).
TINY_VAE_FOLDER = "vae_tiny"


def tiny_vae_for(pipe, source: str | None):
    """The tiny VAE of the `fast` tuning, or None: the model's own (SOURCE/vae_tiny), random for the benchmark models.

    A random tiny VAE on a real model would turn its images into noise, so a model
    without TAESD weights keeps its full VAE.
    """
    from .models import ARCH_SOURCES

    if source in ARCH_SOURCES:
        return tiny_vae_like(pipe.vae, pipe.device, pipe.dtype)
    folder = os.path.join(source, TINY_VAE_FOLDER) if source else None
    if folder is None or not os.path.isfile(os.path.join(folder, "config.json")):
        log.warning("no %s/ in the model's folder (%s): keeping the full VAE", TINY_VAE_FOLDER, source)
        return None
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(folder, torch_dtype=pipe.dtype, local_files_only=True).to(pipe.device).eval()


# FP8 matmuls (benchmarks only, bench/gpu sd15-fp8*): not part of any tuning. On the H200 with
# torch 2.11 and torchao 0.18 the eager UNet got slower (separate scaling and cast kernels)
# and Dynamo could not trace torchao's FP8 tensors, so nothing compiled (BENCHMARKS.md).
# The blocks whose linear layers FP8 takes: attention projections and feed-forward.
FP8_BLOCKS = ("Transformer2DModel",)


def fp8_linears(unet) -> list:
    """The linear layers quantize_fp8 converts: inside FP8_BLOCKS, both sides multiples of 16 (FP8 GEMMs need it)."""
    return [
        module
        for block in unet.modules()
        if type(block).__name__ in FP8_BLOCKS
        for module in block.modules()
        if isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
    ]


def fp8_convolutions(unet) -> list:
    """The resnet blocks' convolutions with both channel counts multiples of 16 (quantize_fp8's convolutions)."""
    return [
        module
        for block in unet.modules()
        if type(block).__name__ == "ResnetBlock2D"
        for module in block.modules()
        if isinstance(module, torch.nn.Conv2d) and module.in_channels % 16 == 0 and module.out_channels % 16 == 0
    ]


def quantize_fp8(unet, convolutions: bool = False) -> int:
    """FP8 weights and dynamically scaled FP8 activations for fp8_linears(unet); return how many were converted.

    With convolutions, fp8_convolutions(unet) instead. Needs torchao and a GPU of compute
    capability 8.9 or more (Ada, Hopper); elsewhere it logs why and leaves the UNet as it
    is, so the caller goes on in the pipeline's dtype.
    """
    device = unet.device
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        log.warning("fp8: needs a CUDA GPU of compute capability 8.9 or more, this is %s: not quantized", device)
        return 0
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_
    except ImportError as exc:
        log.warning("fp8: torchao is not importable (%s): not quantized", exc)
        return 0
    modules = fp8_convolutions(unet) if convolutions else fp8_linears(unet)
    chosen = {id(module) for module in modules}
    # torchao scales per row only bf16 weights (and convolutions only per tensor).
    granularity = PerRow() if unet.dtype == torch.bfloat16 and not convolutions else PerTensor()
    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(granularity=granularity), filter_fn=lambda module, _name: id(module) in chosen)
    log.info("fp8: %d %s quantized (%s)", len(chosen), "convolutions" if convolutions else "linear layers", type(granularity).__name__)
    return len(chosen)


def prefer_cudnn_attention() -> bool:
    """SDPA priority: cuDNN first, then the default order; shapes cuDNN refuses (the VAE's) fall through."""
    from torch.nn.attention import SDPBackend

    if not hasattr(torch._C, "_set_sdp_priority_order"):
        return False
    torch.backends.cuda.enable_cudnn_sdp(True)
    first = [int(SDPBackend.CUDNN_ATTENTION), int(SDPBackend.FLASH_ATTENTION), int(SDPBackend.EFFICIENT_ATTENTION)]
    rest = [backend for backend in torch._C._get_sdp_priority_order() if backend not in first]
    torch._C._set_sdp_priority_order(first + rest)
    return True


def apply_tuning(pipe, tuning: Tuning, defer_compile: bool = False):
    """Apply a Tuning to a loaded pipeline in place (weights stay as they are).

    Compiled modules get a background.Switch as their forward: compiled at once
    (their first call compiles), or, with defer_compile, eager until
    warm_up_background's thread has compiled them. cudnn_benchmark and
    cudnn_attention are process-wide switches: the runner serves one pipeline a process.
    """
    from .background import Switch

    # Deferred: the compile thread switches it on (background.py); the eager warm-up skips seconds of benchmarking.
    if tuning.cudnn_benchmark and not defer_compile:
        torch.backends.cudnn.benchmark = True
    if tuning.cudnn_attention and not prefer_cudnn_attention():
        log.warning("this torch cannot set the SDPA priority order: cuDNN attention not preferred")
    tiny_vae = tiny_vae_for(pipe, getattr(pipe, "_img2img_source", None)) if tuning.tiny_vae else None
    if tiny_vae is not None:
        pipe.vae = tiny_vae
        pipe.register_modules(vae=tiny_vae)
    if tuning.fuse_qkv:
        # Also sets FusedAttnProcessor2_0 (SDPA) on the UNet and the KL VAE.
        pipe.fuse_qkv_projections(vae=tiny_vae is None)
    if tuning.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    switches = []
    if tuning.compile_mode:
        import torch._inductor.config as inductor_config

        # 1x1 convolutions (the attention blocks' proj_in/out, the VAE's shortcuts) as matmuls.
        inductor_config.conv_1x1_as_mm = True
        inductor_config.layout_optimization = tuning.inductor_layout_optimization
        if tuning.regional:
            _regional_dynamo_config()
        switches = [Switch(module, tuning.compile_mode, tuning.compile_backend) for module in compile_targets(pipe, tuning)]
        log.info("compiling %d modules%s", len(switches), " in the background" if defer_compile else "")
        if not defer_compile:
            for switch in switches:
                switch.use_compiled()
    if tuning.feature_cache:
        from . import deepcache

        # Outside the compiled forwards: the step counter must not be traced.
        deepcache.install(pipe.unet, pipe.scheduler, tuning.feature_cache, tuning.feature_cache_layers)
    pipe._img2img_switches = switches
    # Read by the warm-ups: the tuning is part of the compile cache's key.
    pipe._img2img_tuning = tuning
    return pipe


def native_size(pipe) -> tuple[int, int]:
    """The image size the model was trained at (512 for SD 1.5, 1024 for SDXL)."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def run_batch(pipe, device: torch.device, batch: int, size: tuple[int, int]):
    """One pipeline call on gray images, as the runner makes it (seeded generators, PIL out).

    One denoising step, or as few as reach the tuning's unguided steps (the UNet on half the rows).
    """
    share = tuning_of(pipe).guidance_share
    image = Image.new("RGB", size, (128, 128, 128))
    with torch.inference_mode():
        return pipe(
            prompt=["warm-up"] * batch,
            negative_prompt=[""] * batch,
            image=[image] * batch,
            strength=0.5,
            num_inference_steps=2 * guidance.steps_reaching_the_cut(share),
            guidance_scale=7.5,
            generator=[torch.Generator(device=device).manual_seed(index) for index in range(batch)],
            output_type="pil",
            **guidance.call_kwargs(pipe, share),
        )


def _peak_bytes(pipe, device: torch.device, batch: int, size: tuple[int, int]) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_batch(pipe, device, batch, size)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def fit_batch(pipe, device: torch.device, size: tuple[int, int], cap: int = BATCH_CAP, check: bool = True) -> int:
    """The largest batch (<= cap) whose measured memory fits in MEMORY_SHARE of the free GPU memory.

    Peak memory grows linearly with the batch (the UNet's activations and the
    latents; the VAE decodes one image at a time): measured at batches 2 and 4,
    extrapolated, then checked by running the chosen batch.
    """
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
    started = time.perf_counter()
    run_batch(pipe, device, 1, size)
    log.info("first call at %dx%d took %.1fs", *size, time.perf_counter() - started)
    if max_batch is None:
        batch = fit_batch(pipe, device, size, check=run_largest)
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
    from . import compile_cache

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
    from . import compile_cache

    size = native_size(pipe)
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
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        inductor_config.force_disable_caches = True
        cache = None
        batch = _warm_up(pipe, device, max_batch, size)
    seconds = time.perf_counter() - started
    log.info("warm-up took %.1fs; compiler: %s", seconds, compile_stats())
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
    from .background import BackgroundCompile, switches_of

    size = native_size(pipe)
    cache = _open_cache(pipe, device, max_batch, size, cache_dir)
    started = time.perf_counter()
    for switch in switches_of(pipe):
        switch.recording = True
    batch = _warm_up(pipe, device, max_batch, size, run_largest=False)
    log.info("eager warm-up took %.1fs", time.perf_counter() - started)
    return batch, BackgroundCompile(pipe, device, cache, max_batch=batch).start()


def compile_stats() -> dict:
    """Graphs compiled and cache hits/misses of this process so far (for the log and the benchmarks)."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": counters["stats"].get("unique_graphs", 0),
        "fxgraph_hit": counters["inductor"].get("fxgraph_cache_hit", 0),
        "fxgraph_miss": counters["inductor"].get("fxgraph_cache_miss", 0),
        "aot_hit": counters["aot_autograd"].get("autograd_cache_hit", 0),
        "aot_miss": counters["aot_autograd"].get("autograd_cache_miss", 0),
    }
