"""GPU benchmark of the DiT families: FLUX.1 [dev] and SD 3.5 Large, out of the box against the runner, in one call.

    python3 bench/gpu/dit.py --out $OUT --budget 540 --stages peak,flux-base,flux-tuned,runner-flux

The job: img2img at 1024x1024 in bf16, the service's defaults: 28 steps at strength 0.6
(flow matching: 28 - floor(28 x 0.4) = 17 denoising steps), guidance at the family's
default (FLUX.1 dev: 3.5, the distilled guidance the transformer embeds, one transformer
call a step; SD3: 7.0, classifier-free, two rows a step), seeded noise images in. The
models are flux-arch / sd35-arch (diffusion-py/img2img_runner/arch.py): the full-size
architectures with random weights, so every call costs what the real models cost and the
images are noise.

Stages, each in its own process under bench.py's orchestration (a time limit each, a
stage that no longer fits is skipped):

| stage | what |
|---|---|
| `peak` | bench.py's: 8192^3 fp16 and bf16 matmul rates, a 1 GiB device copy |
| `flux-base`, `sd35-base` | out of the box: `build_arch_pipeline` in bf16 and the plain diffusers call (no height/width, default attention, PIL in and out), batch 1; FLOPs of one transformer call (FlopCounterMode) and its time |
| `flux-tuned`, `sd35-tuned` | the runner's pipeline (models.load_pipeline) with its exact tuning compiled before the first call (`compile-first`: the transformer's blocks compiled one by one, fused QKV where it applies, cuDNN attention first), called as the runner calls it (the family's arguments); batches `--tuned-batches`; outputs against the base's; the transformer call's time |
| `runner-flux`, `runner-sd35` | `python -m img2img_runner` with its defaults (tuning `compile`: ready after an eager warm-up, compiled in the background): spawn to ready, the background compile, then rounds of `--runner-jobs` jobs over frames (PNG in, PNG out) |

Results: OUT/results.jsonl, tables in OUT/summary.md, logs in OUT/bench.log and OUT/runner.log.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from types import SimpleNamespace

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "diffusion-py"))
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (bench/gpu/bench.py: the orchestration, the recorder, the peak stage)

SIZE = (1024, 1024)
STEPS, STRENGTH = 28, 0.6
PROMPT = "a watercolor painting of a lighthouse"
MODELS = {"flux": ("flux-arch", "flux"), "sd35": ("sd35-arch", "sd3")}  # name: (source, family)

# name: (what, max seconds, min seconds left to start it)
STAGES = {
    "peak": ("matmul rates of this GPU", 60, 20),
    "flux-base": ("FLUX.1 dev 1024 bf16 out of the box: plain diffusers call, batch 1", 200, 80),
    "flux-tuned": ("FLUX.1 dev with the runner's exact tuning compiled first, called as the runner calls it", 330, 150),
    "runner-flux": ("python -m img2img_runner --source flux-arch: spawn to ready, background compile, jobs over frames", 260, 100),
    "sd35-base": ("SD 3.5 Large 1024 bf16 out of the box: plain diffusers call, batch 1", 200, 80),
    "sd35-tuned": ("SD 3.5 Large with the runner's exact tuning compiled first, called as the runner calls it", 330, 150),
    "runner-sd35": ("python -m img2img_runner --source sd35-arch: spawn to ready, background compile, jobs over frames", 260, 100),
}


def guidance_of(model: str) -> float:
    from img2img_runner.params import LIMITS

    return LIMITS.families[MODELS[model][1]].guidance_scale.default


def noise_images(batch: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1234)
    return [Image.fromarray(rng.integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)) for _ in range(batch)]


def base_call(pipe, model: str, images, steps: int = STEPS, strength: float = STRENGTH):
    """diffusers out of the box: the pipeline's own defaults for everything the job does not set."""
    import numpy as np
    import torch

    with torch.inference_mode():
        output = pipe(
            prompt=[PROMPT] * len(images),
            image=images,
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=guidance_of(model),
            generator=[torch.Generator(device=pipe.device).manual_seed(seed) for seed in range(len(images))],
            output_type="pil",
        )
    return [np.asarray(image) for image in output.images]


def runner_call(pipe, model: str, images, steps: int = STEPS, strength: float = STRENGTH):
    """The call the runner makes for a batch of jobs (Runner._run_group): the family's arguments, PIL in and out."""
    import numpy as np
    import torch

    from img2img_runner import guidance
    from img2img_runner.families import family_of
    from img2img_runner.tuning import tuning_of

    family = family_of(pipe)
    rows = [SimpleNamespace(prompt=PROMPT, negative_prompt=None, strength=strength, steps=steps, guidance_scale=guidance_of(model), image=image) for image in images]
    with torch.inference_mode():
        output = pipe(
            **family.call_kwargs(pipe, rows),
            **family.image_kwargs(images),
            generator=[torch.Generator(device=pipe.device).manual_seed(seed) for seed in range(len(images))],
            output_type="pil",
            **guidance.call_kwargs(pipe, tuning_of(pipe).guidance_share),
        )
    return [np.asarray(image) for image in output.images]


def measure(record, call, config: str, source: str, batches, deadline: float, reps: int = 2) -> dict:
    """images/s per batch: one untimed call (compiles, if anything does), then the median of reps;
    returns each batch's outputs."""
    import torch

    outputs = {}
    per_image = None  # seconds an image, timed at the last batch: what the next batch's calls should take
    for batch in batches:
        if time.perf_counter() > deadline:
            print(f"{config}: out of time before batch {batch}", flush=True)
            break
        images = noise_images(batch)
        try:
            started = time.perf_counter()
            call(images)
            torch.cuda.synchronize()
            first = time.perf_counter() - started
            # Room for the timed calls, or the first call's time alone. A first call that compiled says
            # nothing of the next ones: the last batch's time an image does (the first batch is always timed).
            if per_image is not None and time.perf_counter() + reps * per_image * batch > deadline:
                record(kind="pipeline", config=config, model=source, batch=batch, first_call_s=round(first, 3), timed=False)
                break
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                outputs[batch] = call(images)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            record(kind="pipeline", config=config, model=source, batch=batch, oom=True)
            break
        median = statistics.median(times)
        per_image = median / batch
        record(
            kind="pipeline",
            config=config,
            model=source,
            batch=batch,
            first_call_s=round(first, 3),
            seconds_per_batch=round(median, 3),
            seconds_per_image=round(median / batch, 3),
            images_per_s=round(batch / median, 4),
            spread=round((max(times) - min(times)) / median, 3),
            peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        )
    return outputs


def capture_transformer_call(pipe, run) -> tuple:
    """The arguments of the transformer's first call while run() runs."""
    captured = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: captured.append((args, kwargs)) if not captured else None, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return captured[0]


def transformer_rows(call) -> int:
    args, kwargs = call
    return int((args[0] if args else kwargs["hidden_states"]).shape[0])


def time_transformer(pipe, call, reps: int = 5) -> float:
    """Median seconds of one transformer call on the captured arguments (CUDA events)."""
    import torch

    args, kwargs = call
    with torch.inference_mode():
        for _ in range(2):
            pipe.transformer(*args, **kwargs)
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            pipe.transformer(*args, **kwargs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def transformer_flops(pipe, call) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = call
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), torch.compiler.set_stance("force_eager"), counter:
        pipe.transformer(*args, **kwargs)
    return float(counter.get_total_flops())


def peak_tflops(out: pathlib.Path) -> float | None:
    path = out / "results.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        item = json.loads(line)
        if item.get("kind") == "matmul" and item.get("dtype") == "bfloat16":
            return item["tflops"]
    return None


def reference_path(model: str) -> pathlib.Path:
    return pathlib.Path("/tmp") / f"dit-ref-{model}.npy"


def record_step(record, pipe, run_one_step, config: str, source: str, out: pathlib.Path, count: bool) -> None:
    """One transformer call (one denoising step of one image) timed, with its FLOPs and the floor."""
    call = capture_transformer_call(pipe, run_one_step)
    seconds = time_transformer(pipe, call)
    fields = dict(kind="step", config=config, model=source, rows=transformer_rows(call), step_ms=round(seconds * 1000, 2))
    if count:
        flops = transformer_flops(pipe, call)
        peak = peak_tflops(out)
        fields.update(tflop_per_step=round(flops / 1e12, 2), achieved_tflops=round(flops / seconds / 1e12, 1))
        if peak:
            fields.update(peak_tflops=peak, floor_ms=round(flops / (peak * 1e12) * 1000, 2), pct_of_peak=round(100 * flops / (peak * 1e12) / seconds, 1))
    record(**fields)


def stage_base(record, out, deadline, args, model: str) -> None:
    import numpy as np
    import torch

    from img2img_runner.arch import build_arch_pipeline

    source = MODELS[model][0]
    record(kind="env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, diffusers=bench._version("diffusers"), transformers=bench._version("transformers"))
    started = time.perf_counter()
    pipe = build_arch_pipeline(source, torch.device("cuda", 0), torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    torch.cuda.synchronize()
    record(kind="build", config="base", model=source, seconds=round(time.perf_counter() - started, 2), weights_gib=round(torch.cuda.memory_allocated() / 2**30, 2))
    one = noise_images(1)
    record_step(record, pipe, lambda: base_call(pipe, model, one, steps=2, strength=0.5), "base", source, out, count=True)
    outputs = measure(record, lambda images: base_call(pipe, model, images), "base", source, args.base_batches, deadline)
    if 1 in outputs:
        np.save(reference_path(model), np.stack(outputs[1]))


def stage_tuned(record, out, deadline, args, model: str) -> None:
    import numpy as np
    import torch

    from img2img_runner.models import load_pipeline
    from img2img_runner.tuning import TUNINGS, apply_tuning

    source = MODELS[model][0]
    started = time.perf_counter()
    pipe = load_pipeline(name=model, source=source, device=torch.device("cuda", 0), dtype=torch.bfloat16)
    apply_tuning(pipe, TUNINGS["compile-first"])
    torch.cuda.synchronize()
    record(kind="build", config="tuned", model=source, seconds=round(time.perf_counter() - started, 2), compiled_modules=len(pipe._img2img_switches))
    outputs = measure(record, lambda images: runner_call(pipe, model, images), "tuned", source, args.tuned_batches, deadline)
    reference = reference_path(model)
    if 1 in outputs and reference.exists():
        record(kind="compare", config="tuned", model=source, batch=1, **bench.deviation(np.load(reference), np.stack(outputs[1])))
    if time.perf_counter() < deadline - 20:
        one = noise_images(1)
        record_step(record, pipe, lambda: runner_call(pipe, model, one, steps=2, strength=0.5), "tuned", source, out, count=False)


def _next_frame(client, deadline: float):
    arrived, frame = client.frames.get(timeout=max(1, deadline - time.perf_counter()))
    if frame is None:
        raise RuntimeError("the runner exited")
    return arrived, frame


def stage_runner(record, out, deadline, args, model: str) -> None:
    """The real runner with its defaults: spawn to ready, the background compile, then rounds of jobs."""
    from feed import RunnerClient, noise_png

    source = MODELS[model][0]
    client = RunnerClient(["--model", model, "--source", source, "--dtype", "bfloat16", *args.runner_args], log_path=str(out / "runner.log"))
    try:
        ready = client.wait_ready(timeout=max(10, deadline - time.perf_counter() - 30))
        record(kind="runner_ready", source=source, **{key: value for key, value in ready.items() if key not in ("v", "type")})
        ready_at = time.perf_counter()
        while True:  # the background compile's end
            arrived, (header, _payload) = _next_frame(client, deadline - 60)
            if header["type"] == "compiled":
                record(kind="runner_compiled", model=source, ok=header.get("ok"), compile_s=header.get("seconds"), after_ready_s=round(arrived - ready_at, 2))
                break
        png = noise_png(SIZE)
        jobs = min(args.runner_jobs, ready["max_batch"])
        params = {"prompt": PROMPT, "negative_prompt": None, "strength": STRENGTH, "steps": STEPS, "guidance_scale": guidance_of(model), "preview_every": 0}
        for round_index in range(args.runner_rounds):
            if time.perf_counter() > deadline - 15:
                break
            ids = {f"r{round_index}-{index}" for index in range(jobs)}
            sent = time.perf_counter()
            for index, job_id in enumerate(sorted(ids)):
                client.send({"v": 1, "type": "job", "id": job_id, "priority": "normal", "params": {**params, "seed": index}}, png)
            finished, peak, batch_sizes, errors, compute = [], 0, set(), [], set()
            while ids:
                arrived, (header, _payload) = _next_frame(client, deadline)
                if header.get("id") not in ids or header["type"] not in ("result", "error"):
                    continue
                ids.discard(header["id"])
                if header["type"] == "error":
                    errors.append(f"{header.get('code')}: {header.get('message')}")
                    continue
                finished.append(arrived)
                peak = max(peak, header.get("peak_memory_bytes", 0))
                batch_sizes.add(header["batch_size"])
                compute.add(header["timings"]["compute_s"])
            wall = max(finished) - sent if finished else None
            record(
                kind="runner",
                model=source,
                round=round_index,
                jobs=jobs,
                errors=errors,
                batch_sizes=sorted(batch_sizes),
                compute_s=sorted(round(value, 3) for value in compute),
                wall_s=wall and round(wall, 3),
                images_per_s=wall and round(len(finished) / wall, 4),
                peak_gib=round(peak / 2**30, 2),
            )
    finally:
        client.close()


STAGE_FUNCS = {"peak": bench.stage_peak}
for _model in MODELS:
    STAGE_FUNCS[f"{_model}-base"] = lambda record, out, deadline, args, model=_model: stage_base(record, out, deadline, args, model)
    STAGE_FUNCS[f"{_model}-tuned"] = lambda record, out, deadline, args, model=_model: stage_tuned(record, out, deadline, args, model)
    STAGE_FUNCS[f"runner-{_model}"] = lambda record, out, deadline, args, model=_model: stage_runner(record, out, deadline, args, model)


def summarize(out: pathlib.Path) -> str:
    path = out / "results.jsonl"
    items = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    env = next((item for item in items if item.get("kind") == "env"), {})
    rates = {item["dtype"]: item["tflops"] for item in items if item.get("kind") == "matmul"}
    lines = [f"GPU: {env.get('gpu')}, torch {env.get('torch')}, diffusers {env.get('diffusers')}; matmul 8192^3: {rates} TFLOP/s", ""]
    lines += ["| model | config | batch | s/batch | img/s | x base b1 | peak GiB | first call s |", "|---|---|---|---|---|---|---|---|"]
    for source, _family in MODELS.values():
        rows = [item for item in items if item.get("kind") == "pipeline" and item.get("model") == source and "images_per_s" in item]
        base = next((item["images_per_s"] for item in rows if item["config"] == "base" and item["batch"] == 1), None)
        for item in rows:
            ratio = f"{item['images_per_s'] / base:.2f}" if base else ""
            lines.append(f"| {source} | {item['config']} | {item['batch']} | {item['seconds_per_batch']} | {item['images_per_s']} | {ratio} | {item['peak_gib']} | {item['first_call_s']} |")
        for item in (item for item in items if item.get("kind") == "runner" and item.get("model") == source and item.get("images_per_s")):
            ratio = f"{item['images_per_s'] / base:.2f}" if base else ""
            lines.append(f"| {source} | runner round {item['round']} | {item['batch_sizes']} | {item['wall_s']} | {item['images_per_s']} | {ratio} | {item['peak_gib']} | |")
    other = [item for item in items if item.get("kind") in ("build", "step", "compare", "runner_ready", "runner_compiled", "status", "copy", "pipeline") and "images_per_s" not in item]
    lines += ["", "Other records:", ""] + [f"- {json.dumps(item)}" for item in other]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--budget", type=float, default=540, help="seconds for all stages together")
    parser.add_argument("--stages", default="peak,flux-base,flux-tuned,runner-flux", help="comma-separated, in order")
    parser.add_argument("--base-batches", default="1")
    parser.add_argument("--tuned-batches", default="1,2,4")
    parser.add_argument("--runner-jobs", type=int, default=4, help="jobs a round (at most the runner's max_batch)")
    parser.add_argument("--runner-rounds", type=int, default=2)
    parser.add_argument("--runner-args", default="", help="extra runner flags, space-separated")
    parser.add_argument("--cache-dir", default="/tmp/inductor-cache")
    parser.add_argument("--pack-cache", action="store_true", help="tar the Inductor cache into OUT (to carry to a later call)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--stage-seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.base_batches = [int(x) for x in args.base_batches.split(",")]
    args.tuned_batches = [int(x) for x in args.tuned_batches.split(",")]
    args.runner_args = args.runner_args.split()
    if args.stage:
        deadline = time.perf_counter() + args.stage_seconds
        STAGE_FUNCS[args.stage](bench.Recorder(pathlib.Path(args.out), args.stage), pathlib.Path(args.out), deadline, args)
        return
    args.stages = [name for name in args.stages.split(",") if name]
    unknown = [name for name in args.stages if name not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    args.passthrough = [
        "--out", args.out,
        "--base-batches", ",".join(map(str, args.base_batches)),
        "--tuned-batches", ",".join(map(str, args.tuned_batches)),
        "--runner-jobs", str(args.runner_jobs),
        "--runner-rounds", str(args.runner_rounds),
        "--runner-args=" + " ".join(args.runner_args),
        "--cache-dir", args.cache_dir,
    ]  # fmt: skip
    bench.run_stages(args, STAGES, __file__, summary=summarize)


if __name__ == "__main__":
    main()
