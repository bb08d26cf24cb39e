"""The long-lived job loop: frames in on stdin, frames out on stdout.

A reader thread turns incoming frames into queued jobs (and answers ping and
cancel at once, even while the pipeline runs), so the parent can send the next
jobs ahead and the accelerator never waits for it. The main thread takes every
queued job available right now, groups compatible ones, and runs one pipeline
call per group. Every accepted job gets exactly one final frame: result or
error.
"""

import copy
import io
import logging
import resource
import threading
import time
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from . import guidance
from .benchlog import append_bench_line
from .families import family_of
from .frames import BadHeader, FrameError, encode_frame, read_frame
from .jobs import Job, JobError, parse_job
from . import previews
from .protocol import (
    TO_RUNNER,
    CancelFrame,
    ErrorFrame,
    JobFrame,
    Message,
    PingFrame,
    PongFrame,
    ProgressFrame,
    ProtocolError,
    PreviewFrame,
    ResultFrame,
    ShutdownFrame,
    StartedFrame,
    Timings,
    parse,
)
from .tuning import tuning_of

log = logging.getLogger("img2img_runner")

# A waiting job of the running batch's priority overtakes it when it costs at most this much less
# than what the batch has left: a 64x64 job need not wait for a 1024x1024 one, two alike do not swap.
OVERTAKE_RATIO = 8


class FrameWriter:
    """Serialises frames from both threads onto one byte stream."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()
        self._broken = False

    def send(self, message: Message, payload: bytes = b"") -> None:
        data = encode_frame(message.header(), payload)
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except OSError as exc:  # parent gone; stdin EOF will stop the loop
                self._broken = True
                log.error("cannot write frames any more: %s", exc)

    def error(self, job_id: str | None, code: str, message: str) -> None:
        self.send(ErrorFrame.of(job_id, code, message))


def warm_up(pipe, device: torch.device) -> None:
    """One small call so kernels, allocator and lazy imports are ready before the first job."""
    family = family_of(pipe)
    image = Image.new("RGB", family.compute_size(64, 64), (128, 128, 128))
    row = SimpleNamespace(prompt="", negative_prompt=None, strength=1.0, steps=1, guidance_scale=family.rules.guidance_scale.default, image=image)
    with torch.inference_mode():
        pipe(
            **family.call_kwargs(pipe, [row]),
            **family.image_kwargs([image]),
            generator=[torch.Generator(device=device).manual_seed(0)],
            output_type="pil",
        )


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def encode_png(job: Job, image: Image.Image) -> bytes:
    """The default result encoder: the pipeline's image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # Linux reports ru_maxrss in KiB; it is the process' peak, not per batch.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Runner:
    """Serves jobs with one pipeline.

    tensor_io: hand the pipeline the batch as one tensor on its device and take
    its output as a tensor (uint8 on the device, one copy to the host), instead
    of PIL images converted one by one on the CPU while the GPU waits. The
    arithmetic is the one diffusers' image processor does (float32 x/255*2-1 in,
    round(x*255) out), so the bytes are the same. encode_workers: threads that
    PNG-encode and send results while the next batch runs (0: inline).
    encoder: turns (job, output image) into the result's PNG bytes (default: encode_png).
    background: a background.BackgroundCompile whose compiled forwards are switched in
    between two batches once ready (never inside a pipeline call).
    buckets: batch sizes a pipeline call is padded up to (the tuning's; CUDA graphs record
    one graph per size): the pad rows repeat the last job and their outputs are dropped.
    overtaking: let a waiting job overtake the running batch at a step's end (see _overtake);
    off for tuned pipelines, whose compiled graphs and per-step caches assume one call at a time.
    """

    def __init__(
        self,
        pipe,
        model: str,
        device: torch.device,
        max_batch: int,
        writer: FrameWriter,
        bench_log: str | None = None,
        tensor_io: bool = False,
        encode_workers: int = 0,
        encoder=None,
        background=None,
        buckets: tuple[int, ...] = (),
        overtaking: bool = False,
    ):
        self.pipe = pipe
        # A pipeline no family serves is refused here, at start (UnsupportedModel).
        self.family = family_of(pipe)
        self.overtaking = overtaking
        self._nested = False
        self.background = background
        self.buckets = tuple(sorted(buckets))
        self.model = model
        self.device = device
        self.max_batch = max_batch
        self.writer = writer
        self.bench_log = bench_log
        self.tensor_io = tensor_io
        self.encoder = encoder or encode_png
        self._encode_pool = ThreadPoolExecutor(encode_workers, thread_name_prefix="encode") if encode_workers > 0 else None
        self._bench_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        # Decoding happens off the reader thread, so a cancel is read at once even while a
        # large image decodes; one thread keeps jobs in the order they came.
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._preview_pool = ThreadPoolExecutor(1, thread_name_prefix="preview")
        self._previews_sent: list = []
        self._decoding: set[str] = set()
        self._running: set[str] = set()
        self._canceled: set[str] = set()
        self._stopping = False
        self._exit_code = 0

    # ---------------------------------------------------------------- reader thread

    def _read_loop(self, stream) -> None:
        try:
            while True:
                try:
                    frame = read_frame(stream)
                except BadHeader as exc:  # whole frame consumed: keep serving
                    self.writer.error(None, "bad_params", str(exc))
                    continue
                if frame is None:
                    log.info("stdin closed: finishing queued jobs, then exiting")
                    break
                header, payload = frame
                try:
                    message = parse(header, TO_RUNNER)
                except ProtocolError as exc:
                    self.writer.error(exc.id, "bad_params", str(exc))
                    continue
                self._dispatch(message, payload)
        except FrameError as exc:  # the stream cannot be trusted past this point
            log.error("broken frame stream: %s", exc)
            self.writer.error(None, "bad_params", str(exc))
            self._exit_code = 2
        except Exception:
            log.exception("frame reader failed")
            self._exit_code = 2
        finally:
            self._stop()

    def _dispatch(self, message: Message, payload: bytes) -> None:
        if isinstance(message, JobFrame):
            self._accept(message, payload)
        elif isinstance(message, CancelFrame):
            self._cancel(message.id)
        elif isinstance(message, PingFrame):
            self.writer.send(PongFrame())
        elif isinstance(message, ShutdownFrame):
            log.info("shutdown asked: finishing queued jobs, then exiting")
            self._stop()

    def _accept(self, message: JobFrame, payload: bytes) -> None:
        with self._cond:
            if self._stopping:
                self.writer.error(message.id, "internal", "runner is shutting down")
                return
            if self._holds(message.id):
                self.writer.error(message.id, "bad_params", f"job id {message.id!r} is already queued or running")
                return
            self._decoding.add(message.id)
        # Decoding in its own thread overlaps it with the pipeline running in the main thread.
        self._decode_pool.submit(self._decode, message, payload)

    def _holds(self, job_id: str) -> bool:
        return job_id in self._decoding or job_id in self._running or any(queued.id == job_id for queued in self._pending)

    def _decode(self, message: JobFrame, payload: bytes) -> None:
        try:
            job, problem = parse_job(message, payload, self.model, self.family), None
        except JobError as exc:
            job, problem = None, exc
        except Exception as exc:  # never leave a job without its one final frame
            log.exception("cannot decode job %s", message.id)
            job, problem = None, JobError("internal", f"{type(exc).__name__}: {exc}")
        with self._cond:
            self._decoding.discard(message.id)
            canceled = message.id in self._canceled
            self._canceled.discard(message.id)
            if job is not None and not canceled:
                self._pending.append(job)
            self._cond.notify()
        if canceled:
            self.writer.error(message.id, "canceled", "job was canceled before it started")
        elif problem is not None:
            self.writer.error(message.id, problem.code, str(problem))

    def _cancel(self, job_id: str) -> None:
        with self._cond:
            queued = next((job for job in self._pending if job.id == job_id), None)
            if queued is not None:
                self._pending.remove(queued)
                self.writer.error(job_id, "canceled", "job was canceled before it started")
            elif job_id in self._running or job_id in self._decoding:
                # The step callback sees it (the batch answers it when the call returns), or
                # the decoder does when it finishes.
                self._canceled.add(job_id)
            else:
                log.info("cancel for unknown or finished job %s ignored", job_id)

    def _stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def abandon(self) -> None:
        """Nobody will receive the results any more (a remote connection closed): drop queued
        jobs, stop running ones at their next step, and let serve() return."""
        with self._cond:
            self._pending.clear()
            self._canceled.update(self._running | self._decoding)
            self._stopping = True
            self._cond.notify()

    # ---------------------------------------------------------------- main thread

    def serve(self, stream) -> int:
        threading.Thread(target=self._read_loop, args=(stream,), name="frame-reader", daemon=True).start()
        while True:
            with self._cond:
                while not self._pending and (not self._stopping or self._decoding):
                    self._cond.wait()
                if not self._pending:
                    self._decode_pool.shutdown(wait=True)
                    if self._encode_pool is not None:
                        self._encode_pool.shutdown(wait=True)  # every result is sent before exit
                    return self._exit_code
                batch = self._take_batch()
            if self.background is not None and self.background.switch_if_ready():
                self.background = None
            self._run_group(batch)

    def _take_batch(self, among: list[Job] | None = None) -> list[Job]:
        """The oldest of the highest-priority queued jobs (of `among`, else all), plus the queued
        jobs that can share its call, higher priorities first (no waiting for more)."""
        candidates = self._pending if among is None else among
        head = min(candidates, key=lambda job: job.rank)  # the first of the lowest rank: the oldest
        batch = sorted((job for job in candidates if job.batch_key == head.batch_key), key=lambda job: job.rank)[: self.max_batch]
        for job in batch:
            self._pending.remove(job)
            self._running.add(job.id)
        return batch

    def _is_canceled(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._canceled

    def _settle(self, job: Job) -> bool:
        """Mark a job finished; True if it was canceled (it then answers 'canceled', no result)."""
        with self._cond:
            self._running.discard(job.id)
            canceled = job.id in self._canceled
            self._canceled.discard(job.id)
        if canceled:
            self.writer.error(job.id, "canceled", "job was canceled while running")
        return canceled

    def _fail(self, jobs: list[Job], code: str, message: str) -> None:
        for job in jobs:
            if not self._settle(job):
                self.writer.error(job.id, code, message)

    def _run_group(self, jobs: list[Job]) -> None:
        out_of_memory = False
        try:
            self._run_batch(jobs)
        except torch.cuda.OutOfMemoryError:
            # Retried below, outside the except block: the traceback holds the
            # failed call's tensors, and they must be freed before retrying.
            out_of_memory = True
        except Exception as exc:
            log.exception("batch of %d failed", len(jobs))
            self._fail(jobs, "internal", f"{type(exc).__name__}: {exc}")
        if not out_of_memory:
            return
        torch.cuda.empty_cache()
        if len(jobs) == 1:
            self._fail(jobs, "oom", "out of GPU memory even at batch size 1")
            return
        half = len(jobs) // 2
        self.max_batch = min(self.max_batch, half)
        log.warning("out of GPU memory at batch %d: retrying in halves, max_batch is now %d", len(jobs), self.max_batch)
        for start in range(0, len(jobs), half):
            self._run_group(jobs[start : start + half])

    def _step_callback(self, jobs: list[Job]) -> dict:
        """The pipeline call's step-end callback: the tuning's guidance cut, progress frames, then
        a waiting job that may overtake this batch runs before its next step."""
        previews = any(job.preview_every for job in jobs) and self.family.latent_rgb is not None

        def on_step(pipe, step_index, tensors):
            # num_timesteps is the loop length (int(steps*strength) for DDIM/Euler).
            total = pipe.num_timesteps
            live = [job for job in jobs if not self._is_canceled(job.id)]
            for job in live:
                self.writer.send(ProgressFrame(id=job.id, step=step_index + 1, total=total))
            if previews and "latents" in tensors:
                self._send_previews(live, jobs, tensors["latents"], step_index + 1, total)
            if not live:
                pipe._interrupt = True  # every job is canceled: skip the remaining steps
            elif self.overtaking and not self._nested and step_index + 1 < total:
                self._overtake(live, remaining=(total - step_index - 1) / total)

        return guidance.call_kwargs(self.pipe, tuning_of(self.pipe).guidance_share, on_step, also=("latents",) if previews else ())

    def _send_previews(self, live: list[Job], jobs: list[Job], latents, step: int, total: int) -> None:
        """A preview frame for each live job due one at this step (never at the last: the result
        follows), projected here and encoded and sent by the preview thread (previews.py)."""
        due = [job for job in live if job.preview_every and step % job.preview_every == 0 and step < total]
        if not due:
            return
        # Row i of the call's latents is jobs[i] (padding rows come after the jobs).
        pixels = previews.copy_to_host(previews.latent_pixels(latents[[jobs.index(job) for job in due]], self.family.latent_rgb))
        self._previews_sent.append(self._preview_pool.submit(self._encode_previews, due, pixels, step, total))

    def _encode_previews(self, due: list[Job], pixels, step: int, total: int) -> None:
        try:
            for job, rgb in zip(due, pixels()):
                self.writer.send(PreviewFrame(id=job.id, step=step, total=total), previews.webp(rgb))
        except Exception:
            log.exception("previews at step %d not sent", step)  # a preview is a courtesy: the job goes on

    def _previews_done(self) -> None:
        """The batch's previews are out before its results, so none arrives after its job ended."""
        for sent in self._previews_sent:
            sent.result()
        self._previews_sent.clear()

    def _overtake(self, running: list[Job], remaining: float) -> None:
        """Runs, between two steps of the running batch, one batch of waiting jobs that should
        not wait for it: of a higher priority, or of the same and at most 1/OVERTAKE_RATIO of
        the work the running batch has left. At most one such batch a step, so the running one
        always advances; the overtaking batch cannot itself be overtaken.
        """
        rank = min(job.rank for job in running)
        left = remaining * sum(job.cost for job in running)
        with self._cond:
            waiting = [job for job in self._pending if job.rank < rank or (job.rank == rank and job.cost * OVERTAKE_RATIO <= left)]
            if not waiting:
                return
            batch = self._take_batch(waiting)
        log.info("%d job(s) overtake a running batch of %d", len(batch), len(running))
        self._run_nested(batch)

    def _run_nested(self, batch: list[Job]) -> None:
        """A pipeline call inside another's step callback. The pipeline keeps its call's state on
        itself (guidance scale, step count, interrupt flag) and in its scheduler (timesteps, step
        index): the inner call gets a copy of the scheduler, and the outer call's state is put back."""
        pipe = self.pipe
        state = {name: value for name, value in vars(pipe).items() if not isinstance(value, torch.nn.Module)}
        scheduler = getattr(pipe, "scheduler", None)
        if scheduler is not None:
            pipe.scheduler = copy.deepcopy(scheduler)
        self._nested = True
        try:
            self._run_group(batch)
        finally:
            self._nested = False
            if scheduler is not None:
                pipe.scheduler = scheduler
            for name, value in state.items():
                if getattr(pipe, name, None) is not value:  # diffusers' setattr also rewrites the config
                    setattr(pipe, name, value)

    def _run_batch(self, jobs: list[Job]) -> None:
        head = jobs[0]
        for job in jobs:
            self.writer.send(StartedFrame(id=job.id, batch_size=len(jobs)))
        _reset_peak_memory(self.device)
        # Rows of the call: the jobs, then copies of the last one up to the bucket's size.
        # (Not past max_batch, which an out-of-memory may have lowered below a bucket.)
        size = bucket_for(len(jobs), self.buckets)
        rows = jobs + [jobs[-1]] * ((size if size <= self.max_batch else len(jobs)) - len(jobs))
        # One generator per job, seeded by the job: its noise never depends on batch-mates.
        generators = [torch.Generator(device=self.device).manual_seed(job.seed) for job in rows]
        for job in jobs:
            # Here, in the thread that calls the pipeline: a fast tokenizer shared across threads can
            # fail ("Already borrowed") while the pipeline sets its truncation.
            job.notes = self.family.prompt_notes(self.pipe, job)
        started = time.perf_counter()
        tensor_io = self._can_use_tensors(head)
        try:
            with torch.inference_mode():
                output = self.pipe(
                    **self.family.call_kwargs(self.pipe, rows),
                    **self.family.image_kwargs(self._input_tensor(rows) if tensor_io else [job.image for job in rows]),
                    generator=generators,
                    output_type="pt" if tensor_io else "pil",
                    **self._step_callback(jobs),
                )
                images = tensor_to_arrays(output.images[: len(jobs)]) if tensor_io else output.images[: len(jobs)]
        finally:
            self._previews_done()  # before a result or an error frame
        compute_s = time.perf_counter() - started
        peak = _peak_memory_bytes(self.device)
        for job, image in zip(jobs, images):
            self._deliver(job=job, image=image, batch_size=len(jobs), compute_s=compute_s, peak=peak)

    def _can_use_tensors(self, head: Job) -> bool:
        # Sizes off the VAE's grid are resized by diffusers, differently for PIL and tensors.
        factor = getattr(self.pipe, "vae_scale_factor", 8)
        return self.tensor_io and self.family.tensor_io and head.image.width % factor == 0 and head.image.height % factor == 0

    def _input_tensor(self, jobs: list[Job]) -> torch.Tensor:
        return images_to_tensor([job.image for job in jobs], self.device)

    def _deliver(self, job: Job, image, batch_size: int, compute_s: float, peak: int) -> None:
        if self._settle(job):
            return
        if self._encode_pool is None:
            self._send_result(job, image, batch_size, compute_s, peak)
        else:
            self._encode_pool.submit(self._send_result_or_error, job, image, batch_size, compute_s, peak)

    def _send_result_or_error(self, job: Job, image, batch_size: int, compute_s: float, peak: int) -> None:
        try:
            self._send_result(job, image, batch_size, compute_s, peak)
        except Exception as exc:
            log.exception("cannot encode the result of %s", job.id)
            self.writer.error(job.id, "internal", f"{type(exc).__name__}: {exc}")

    def _send_result(self, job: Job, image, batch_size: int, compute_s: float, peak: int) -> None:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if image.size != job.size:
            # The VAE works on multiples of 8 pixels and small inputs were enlarged: answer with the input's size.
            image = image.resize(job.size, Image.Resampling.LANCZOS)
        started = time.perf_counter()
        payload = self.encoder(job, image)
        encode_s = time.perf_counter() - started
        result = ResultFrame(
            id=job.id,
            width=image.width,
            height=image.height,
            batch_size=batch_size,
            timings=Timings(decode_s=round(job.decode_s, 6), compute_s=round(compute_s, 6), encode_s=round(encode_s, 6)),
            peak_memory_bytes=peak,
            notes=job.notes,
        )
        if self.bench_log:
            # Before the result frame, so a parent that saw the result finds the line.
            try:
                with self._bench_lock:
                    append_bench_line(self.bench_log, model=self.model, time_seconds=job.decode_s + compute_s + encode_s, memory_bytes=peak)
            except OSError as exc:
                log.error("cannot append to bench log %s: %s", self.bench_log, exc)
        self.writer.send(result, payload)


def bucket_for(count: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds count rows; count itself past the largest bucket or without buckets."""
    return next((size for size in sorted(buckets) if size >= count), count)


def images_to_tensor(images: list[Image.Image], device: torch.device) -> torch.Tensor:
    """RGB images as one float32 NCHW tensor in [0, 1] on the device: diffusers' pil_to_numpy arithmetic."""
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
    pixels = pixels.pin_memory() if device.type == "cuda" else pixels
    pixels = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return pixels.to(torch.float32) / 255.0


def tensor_to_arrays(images: torch.Tensor) -> list[np.ndarray]:
    """Pipeline output (NCHW in [0, 1], on the device) to HWC uint8 arrays: diffusers' numpy_to_pil arithmetic."""
    pixels = (images.to(torch.float32) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(pixels)
