"""python -m img2img_runner --model NAME [...]: load one model, then serve frames on stdin/stdout,
or, with --connect URL, over a WebSocket to the service's worker gateway (a remote worker)."""

import argparse
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from . import tuning
from .liar import PREFIX as LIAR_PREFIX
from .liar import lying
from .families import family_of
from .graphs import graph_buckets
from .models import family_of_source, load_pipeline, parse_model_names, pick_device, pick_dtype
from .params import LIMITS
from .protocol import CompiledFrame, ReadyFrame
from .remote import serve_remote
from .runner import FrameWriter, Runner, warm_up
from .standin import SleepingPipeline, echo_input, parse_latencies
from .warmup import warm_up_background, warm_up_tuned

STANDIN_PREFIX = "standin:"
ENCODE_WORKERS = 4


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m img2img_runner", description=__doc__)
    parser.add_argument("--model", required=True, help="model name (tiny is built in)")
    parser.add_argument(
        "--source",
        help="local diffusers folder or HF repo id in the offline cache; for tests and benchmarks, standin:SPEC "
        "(sleeps measured latencies) or liar:[SOURCE] (inverts every image)",
    )
    parser.add_argument("--model-names", help="model_names.txt to look the model's source up in")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], help="default: the model's `dtype=`, else its family's on cuda (common/params.json), float32 on cpu"
    )
    parser.add_argument("--family", choices=sorted(LIMITS.families), help="the family the model must be of (default: the model's `family=`, else any)")
    parser.add_argument(
        "--max-batch",
        type=int,
        help="jobs per pipeline call (default: tuned cuda path: the largest that fits in measured memory, at most 24; "
        "untuned cuda: 8; cpu: 4)",
    )
    parser.add_argument("--bench-log", help="append model;time_seconds;memory_mib per job to this CSV")
    parser.add_argument(
        "--tuning",
        choices=["auto", *tuning.TUNINGS],
        default="auto",
        help="GPU speed-ups for full-size SD pipelines on cuda (auto: the model's `tuning=` in --model-names, else "
        "compile; off: the plain diffusers pipeline; fast: not exact, see tuning.py); never applied on cpu or to tiny",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="run the UNet without CUDA graphs even where the tuning replays them (fastest): the graphs "
        "hold GPU memory of their own, about one largest batch's activations",
    )
    parser.add_argument("--connect", help="ws(s)://host/api/workers/connect: serve as a remote worker over a WebSocket")
    parser.add_argument("--token", help="worker token for --connect (default: $IMG2IMG_WORKER_TOKEN)")
    parser.add_argument(
        "--standby",
        action="store_true",
        help="import what loading needs, then wait for a `start` line on stdin before loading (EOF: exit); "
        "the consumer keeps one ready after an idle unload, so the next start skips the imports",
    )
    args = parser.parse_args(argv)
    args.token = args.token or os.environ.get("IMG2IMG_WORKER_TOKEN")
    if args.connect and not args.token:
        parser.error("--connect needs --token or IMG2IMG_WORKER_TOKEN")
    if args.max_batch is not None and args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    return args


@dataclass(frozen=True)
class Resolved:
    source: str | None
    tuning: str
    family: str | None
    dtype: str | None


def _resolve(args) -> Resolved:
    """The model's source, tuning, family and dtype: the command line's, else model_names.txt's (--model-names), else the defaults."""
    entry = None
    if args.model_names is not None:
        entries = {entry.name: entry for entry in parse_model_names(args.model_names)}
        if args.model not in entries:
            raise ValueError(f"model {args.model!r} is not listed in {args.model_names}")
        entry = entries[args.model]
    source = args.source or (entry.source if entry else None)
    tuning_name = args.tuning if args.tuning != "auto" else (entry.tuning if entry and entry.tuning else tuning.DEFAULT_TUNING)
    return Resolved(source, tuning_name, args.family or (entry.family if entry else None), args.dtype or (entry.dtype if entry else None))


def _untuned_because(model: str, tuning_name: str, pipe) -> str:
    if tuning_name == "off":
        return "tuning=off"
    if model == "tiny":
        return "the built-in toy model is never tuned"
    return f"the {family_of(pipe).name} family's {type(pipe).__name__} has neither a UNet nor a transformer to tune"


def _prepare(load, args, device, log, tuning_name: str):
    """Load, tune (full-size UNet and DiT pipelines on cuda) and warm the pipeline; return (pipe, tuned, max_batch, background).

    A pipeline the tuning cannot handle (an unusual architecture, a compiler
    error) is reloaded and served plain rather than not at all. With a
    background tuning the compilation continues after this returns
    (background: the BackgroundCompile whose switch the runner asks for between batches).
    """
    pipe = load()
    if tuning_name != "off" and tuning.wants_tuning(args.model, device, pipe):
        chosen = tuning.TUNINGS[tuning_name]
        if args.no_cuda_graphs:
            chosen = replace(chosen, cuda_graphs=False)
        refused = tuning.refusal(chosen, pipe)
        if refused:
            # The exact default rather than the plain pipeline: the operator asked for speed.
            log.warning("tuning %s refused: %s; the %s tuning instead", tuning_name, refused, tuning.DEFAULT_TUNING)
            tuning_name, chosen = tuning.DEFAULT_TUNING, tuning.TUNINGS[tuning.DEFAULT_TUNING]
        log.info("tuning %s: %s", tuning_name, chosen)
        try:
            tuning.apply_tuning(pipe, chosen, defer_compile=chosen.background)
            if chosen.background:
                batch, background = warm_up_background(pipe, device, args.max_batch)
                return pipe, True, batch, background
            # Compiles at the model's native size and measures memory for the batch size.
            return pipe, True, warm_up_tuned(pipe, device, args.max_batch), None
        except Exception:
            log.exception("tuning %s failed: serving the plain pipeline", tuning_name)
            del pipe
            torch._dynamo.reset()
            torch.cuda.empty_cache()
            pipe = load()
    elif device.type == "cuda":
        log.warning("model %s runs untuned: %s", args.model, _untuned_because(args.model, tuning_name, pipe))
    warm_up(pipe, device)
    return pipe, False, args.max_batch or (8 if device.type == "cuda" else 4), None


@dataclass
class Serving:
    """What the one serve path needs, from either the model loader or the stand-in's."""

    pipe: Any
    device: Any  # torch.device the Runner computes on
    device_name: str  # as the ready frame reports it
    dtype_name: str
    max_batch: int
    tuned: bool = False
    encoder: Callable | None = None  # None: the Runner's default, PNG of the output image
    background: Any = None  # background.BackgroundCompile still compiling, or None


def _load_model(args, model: Resolved, log) -> Serving:
    device = pick_device(args.device)
    dtype = pick_dtype(device, model.dtype, model.family or family_of_source(args.model, model.source))

    def load():
        pipe = load_pipeline(name=args.model, source=model.source, device=device, dtype=dtype)
        found = family_of(pipe)  # UnsupportedModel: no family serves it
        if model.family is not None and found.name != model.family:
            raise ValueError(f"model {args.model} should be of the {model.family} family, but its {type(pipe).__name__} is of {found.name}")
        log.info("model %s is of the %s family", args.model, found.name)
        return pipe

    pipe, tuned, max_batch, background = _prepare(load, args, device, log, model.tuning)
    return Serving(pipe, device, str(device), str(dtype).removeprefix("torch."), max_batch, tuned=tuned, background=background)


def _load_standin(args, spec: str, log) -> Serving:
    """A timed stand-in (sleeps instead of computing, answers with the input): see img2img_runner/standin.py."""
    latencies = parse_latencies(spec)
    log.info("stand-in %s sleeps %s ms per batch", args.model, dict(latencies.points))
    # It computes nothing: a CPU device (peak memory is the process' RSS), "standin" in the ready frame.
    pipe = SleepingPipeline(latencies)
    return Serving(pipe, torch.device("cpu"), "standin", "float16", args.max_batch or latencies.max_batch, encoder=echo_input)


def _preload(log) -> None:
    """What models.load_pipeline imports only when it runs (diffusers' pipelines, tiny, arch: seconds), done ahead of the start."""
    started = time.perf_counter()
    from diffusers import AutoPipelineForImage2Image  # noqa: F401 - resolves diffusers' lazy imports (and torch._dynamo)

    from . import arch, tiny  # noqa: F401

    log.info("standby: imports took %.1fs; waiting for the start line", time.perf_counter() - started)


def _wait_for_start() -> bool:
    """Read stdin up to the first newline, a byte at a time (the frames that follow stay unread); False at EOF."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            return False
        line += byte
    if line.strip() != b"start":
        raise SystemExit(f"standby: expected a `start` line on stdin, got {line[:40]!r}")
    return True


def run(argv, frames_out) -> int:
    """Load the model the command line names and serve it (frames on frames_out and stdin, or a WebSocket); return the exit code."""
    log = logging.getLogger("img2img_runner")
    args = _parse_args(argv)
    if args.standby:
        _preload(log)
        if not _wait_for_start():
            log.info("standby: stdin closed before the start line: exiting")
            return 0
    started = time.perf_counter()
    try:
        model = _resolve(args)
        lies = model.source is not None and model.source.startswith(LIAR_PREFIX)
        if lies:
            model = replace(model, source=model.source.removeprefix(LIAR_PREFIX) or None)
        if model.source is not None and model.source.startswith(STANDIN_PREFIX):
            serving = _load_standin(args, model.source.removeprefix(STANDIN_PREFIX), log)
        else:
            serving = _load_model(args, model, log)
    except Exception as exc:
        # One line with the reason (the consumer reports it as the start-up failure), then the traceback.
        log.exception("cannot load model %s: %s", args.model, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return 1
    load_seconds = time.perf_counter() - started
    log.info(
        "model %s ready on %s (%s) in %.2fs, max_batch %d%s",
        args.model, serving.device_name, serving.dtype_name, load_seconds, serving.max_batch,
        "" if serving.tuned or not serving.device_name.startswith("cuda") else ", untuned",
    )

    ready = ReadyFrame(
        model=args.model,
        device=serving.device_name,
        dtype=serving.dtype_name,
        max_batch=serving.max_batch,
        load_seconds=round(load_seconds, 3),
    )

    def make_runner(writer):
        if serving.background is not None:
            # Once the background compile ends: a `compiled` frame (the consumer then uploads the cache's new entry).
            serving.background.notify(lambda ok, seconds: writer.send(CompiledFrame(ok=ok, seconds=round(seconds or 0.0, 3))))
        return Runner(
            pipe=serving.pipe,
            model=args.model,
            device=serving.device,
            max_batch=serving.max_batch,
            writer=writer,
            bench_log=args.bench_log,
            # The tuned GPU path keeps the CPU off the critical path: tensors in and
            # out of the pipeline, PNG encoding in threads while the next batch runs.
            tensor_io=serving.tuned,
            encode_workers=ENCODE_WORKERS if serving.tuned else 0,
            encoder=lying(serving.encoder) if lies else serving.encoder,
            background=serving.background,
            buckets=_buckets(tuning.tuning_of(serving.pipe), serving.max_batch),
            # Waiting jobs may overtake a running batch at a step's end, except on a tuned pipeline.
            overtaking=not serving.tuned,
        )

    if args.connect:
        frames_out.close()
        return _leave(serve_remote(args.connect, args.token, ready.header(), make_runner), serving.background, log)
    writer = FrameWriter(frames_out)
    writer.send(ready)
    runner = make_runner(writer)
    # Unbuffered, no Python-level lock: the daemon reader thread may still be
    # blocked in read() when the interpreter exits.
    stdin = open(0, "rb", buffering=0, closefd=False)
    return _leave(runner.serve(stdin), serving.background, log)


def _buckets(chosen: tuning.Tuning, max_batch: int) -> tuple[int, ...]:
    """The batch sizes calls are padded up to: the tuning's, or, where it replays CUDA graphs, powers of two and max_batch."""
    return chosen.buckets or (graph_buckets(max_batch) if chosen.cuda_graphs else ())


def _leave(code: int, background, log) -> int:
    """The exit code; a shutdown during the background compile leaves at once, abandoning it.

    Every job is answered by then. Interpreter teardown under a compile thread still inside
    Inductor crashed the process (SIGSEGV) on an H200, and a crash is not how a shutdown ends.
    """
    if background is None or background.done.is_set():
        return code
    log.info("exiting during the background compile: abandoning it")
    logging.shutdown()
    os._exit(code)

