"""python -m img2img_runner --model NAME [...]: load one model, then serve frames on stdin/stdout."""

import argparse
import logging
import os
import sys
import time


def _take_stdout():
    """Keep the real stdout for frames; send everything else written to stdout to stderr.

    Libraries print (and C code writes to fd 1); any stray byte would corrupt the frame stream.
    """
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frames_out


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m img2img_runner", description=__doc__)
    parser.add_argument("--model", required=True, help="model name (tiny is built in)")
    parser.add_argument("--source", help="local diffusers folder or HF repo id in the offline cache")
    parser.add_argument("--model-names", help="model_names.txt to look the model's source up in")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--max-batch", type=int, help="jobs per pipeline call (default: 8 on cuda, 4 on cpu)")
    parser.add_argument("--bench-log", help="append model;time_seconds;memory_mib per job to this CSV")
    args = parser.parse_args(argv)
    if args.max_batch is not None and args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    return args


def _resolve_source(args) -> str | None:
    from .models import parse_model_names

    if args.model_names is None:
        return args.source
    entries = {entry.name: entry for entry in parse_model_names(args.model_names)}
    if args.model not in entries:
        raise ValueError(f"model {args.model!r} is not listed in {args.model_names}")
    return args.source or entries[args.model].source


def main(argv=None) -> int:
    frames_out = _take_stdout()
    # Never download weights: models come from local folders or the offline HF cache.
    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("img2img_runner")
    args = _parse_args(argv)

    # Imported after HF_HUB_OFFLINE is set: huggingface_hub reads it once, at import.
    from .frames import VERSION
    from .models import load_pipeline, pick_device, pick_dtype
    from .runner import FrameWriter, Runner, warm_up

    started = time.perf_counter()
    try:
        device = pick_device(args.device)
        dtype = pick_dtype(device, args.dtype)
        pipe = load_pipeline(name=args.model, source=_resolve_source(args), device=device, dtype=dtype)
        warm_up(pipe, device)
    except Exception:
        log.exception("cannot load model %s", args.model)
        return 1
    load_seconds = time.perf_counter() - started
    max_batch = args.max_batch or (8 if device.type == "cuda" else 4)
    dtype_name = str(dtype).removeprefix("torch.")
    log.info("model %s ready on %s (%s) in %.2fs, max_batch %d", args.model, device, dtype_name, load_seconds, max_batch)

    writer = FrameWriter(frames_out)
    writer.send(
        {
            "v": VERSION,
            "type": "ready",
            "model": args.model,
            "device": str(device),
            "dtype": dtype_name,
            "max_batch": max_batch,
            "load_seconds": round(load_seconds, 3),
        }
    )
    runner = Runner(pipe=pipe, model=args.model, device=device, max_batch=max_batch, writer=writer, bench_log=args.bench_log)
    # Unbuffered, no Python-level lock: the daemon reader thread may still be
    # blocked in read() when the interpreter exits.
    stdin = open(0, "rb", buffering=0, closefd=False)
    return runner.serve(stdin)


if __name__ == "__main__":
    sys.exit(main())
