"""The timed stand-in: the real Runner over a sleeping pipeline and an encoder that echoes the input."""

import io
import json
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from img2img_runner.frames import encode_frame, read_frame
from img2img_runner.runner import FrameWriter, Runner
from img2img_runner.standin import Latencies, SleepingPipeline, echo_input, parse_latencies
from tests.helpers import PACKAGE_DIR, job_header, png_bytes, sample_image

TABLE = {"1": 40, "4": 100}


def test_latencies_interpolate_and_scale():
    table = Latencies({1: 100.0, 4: 250.0, 8: 410.0})
    assert table.batch_ms(1) == 100
    assert table.batch_ms(2) == pytest.approx(150)
    assert table.batch_ms(6) == pytest.approx(330)
    assert table.batch_ms(10) == pytest.approx(490)  # past the table: the last segment's line
    assert table.max_batch == 8
    # Four times the pixels, a third of the steps.
    assert table.seconds(1, 1024, 1024, 5) == pytest.approx(0.1 * 4 / 3)


def test_spec_forms(tmp_path):
    assert parse_latencies('{"1": 10, "2": 15}').points == [(1, 10.0), (2, 15.0)]
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"per_batch_ms": {"2": 30}, "width": 256, "height": 256, "denoise_steps": 10}))
    table = parse_latencies(str(path))
    assert table.points == [(2, 30.0)] and table.pixels == 256 * 256 and table.denoise_steps == 10
    with pytest.raises(ValueError):
        parse_latencies('{"0": 10}')


class StandIn:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, cwd=PACKAGE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send(self, header: dict, payload: bytes = b"") -> None:
        self.proc.stdin.write(encode_frame(header, payload))
        self.proc.stdin.flush()

    def frames_until(self, final_ids: set[str]) -> list[tuple[dict, bytes]]:
        frames, waiting = [], set(final_ids)
        while waiting:
            frame = read_frame(self.proc.stdout)
            assert frame is not None, self.proc.stderr.read().decode()
            frames.append(frame)
            if frame[0]["type"] in ("result", "error"):
                waiting.discard(frame[0].get("id"))
        return frames

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def standin_argv(table: dict, *extra: str, model: str = "sd15") -> list[str]:
    return [sys.executable, "-m", "img2img_runner", "--model", model, "--source", "standin:" + json.dumps(table), *extra]


def test_answers_the_frame_protocol():
    runner = StandIn(standin_argv(TABLE))
    try:
        ready = read_frame(runner.proc.stdout)[0]
        assert list(ready) == ["v", "type", "model", "device", "dtype", "max_batch", "load_seconds"]
        assert (ready["model"], ready["device"], ready["max_batch"]) == ("sd15", "standin", 4)
        image = png_bytes(sample_image(0, (96, 64)))
        started = time.perf_counter()
        for index in range(5):
            # 10 steps at strength 0.6: 6 progress frames per job.
            runner.send(job_header(f"job-{index}", seed=index), image)
        runner.send(job_header("bad"), b"not a png")
        frames = runner.frames_until({f"job-{index}" for index in range(5)} | {"bad"})
        elapsed = time.perf_counter() - started
        by_id: dict[str, list] = {}
        for header, payload in frames:
            by_id.setdefault(header.get("id"), []).append((header, payload))
        assert by_id["bad"][-1][0]["code"] == "bad_image"
        for index in range(5):
            job = by_id[f"job-{index}"]
            kinds = [header["type"] for header, _ in job]
            assert kinds == ["started"] + ["progress"] * 6 + ["result"]
            assert [header["step"] for header, _ in job if header["type"] == "progress"] == [1, 2, 3, 4, 5, 6]
            result, payload = job[-1]
            assert (result["width"], result["height"]) == (96, 64)
            assert Image.open(io.BytesIO(payload)).size == (96, 64)
        # At least one batch slept its scaled table time (96x64 px, 6 of 15 steps).
        assert elapsed >= 0.04 * (96 * 64) / (512 * 512) * 6 / 15
        runner.send({"v": 1, "type": "ping"})
        assert read_frame(runner.proc.stdout)[0] == {"v": 1, "type": "pong"}
    finally:
        assert runner.close() == 0


def test_cancel_while_queued():
    runner = StandIn(standin_argv({"1": 2000}, "--max-batch", "1"))
    try:
        read_frame(runner.proc.stdout)
        image = png_bytes(sample_image(1))
        runner.send(job_header("first", steps=2, strength=1.0), image)
        runner.send(job_header("second", steps=2, strength=1.0), image)
        runner.send({"v": 1, "type": "cancel", "id": "second"})
        frames = runner.frames_until({"first", "second"})
        finals = {header["id"]: header for header, _ in frames if header["type"] in ("result", "error")}
        assert finals["second"]["code"] == "canceled"
        assert finals["first"]["type"] == "result"
    finally:
        assert runner.close() == 0


def test_the_measured_h100_table_parses():
    table = parse_latencies(str(PACKAGE_DIR.parent / "bench" / "gpu" / "h100-sd15.json"))
    assert table.max_batch == 24 and table.pixels == 512 * 512 and table.denoise_steps == 15
    assert 24 / (table.batch_ms(24) / 1000) == pytest.approx(12.35, abs=0.01)


def test_runner_with_the_sleeping_pipeline_answers_each_job_with_its_input():
    # In process: the stand-in is a pipeline plus an encoder given to the plain Runner.
    inputs = {f"job-{index}": png_bytes(sample_image(index, (64, 64))) for index in range(3)}
    stdin = io.BytesIO(b"".join(encode_frame(job_header(job_id, seed=1), payload) for job_id, payload in inputs.items()))
    stdout = io.BytesIO()
    pipe = SleepingPipeline(parse_latencies('{"1": 1, "4": 2}'))
    runner = Runner(pipe=pipe, model="sd15", device=torch.device("cpu"), max_batch=4, writer=FrameWriter(stdout), encoder=echo_input)
    assert runner.serve(stdin) == 0
    stdout.seek(0)
    results = {}
    while (frame := read_frame(stdout)) is not None:
        if frame[0]["type"] == "result":
            results[frame[0]["id"]] = frame[1]
    assert results == inputs


def test_bad_spec_exits_1():
    process = subprocess.run(standin_argv({"0": 10}), cwd=PACKAGE_DIR, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert process.returncode == 1
    assert process.stdout == b""
    assert b"per-batch latencies must map" in process.stderr


def test_a_job_with_previews_gets_them_from_the_stand_in_at_the_latents_size():
    stdin = io.BytesIO(
        encode_frame(job_header("seen", seed=1, steps=10, strength=1.0, preview_every=5), png_bytes(sample_image(0, (96, 64))))
        + encode_frame(job_header("unseen", seed=2, steps=10, strength=1.0), png_bytes(sample_image(1, (96, 64))))
    )
    stdout = io.BytesIO()
    pipe = SleepingPipeline(parse_latencies('{"1": 1, "4": 2}'))
    runner = Runner(pipe=pipe, model="sd15", device=torch.device("cpu"), max_batch=4, writer=FrameWriter(stdout), encoder=echo_input)
    assert runner.serve(stdin) == 0
    stdout.seek(0)
    previews = []
    while (frame := read_frame(stdout)) is not None:
        if frame[0]["type"] == "preview":
            previews.append(frame)
    # Every fifth of 10 steps but the last, for the job that asked; an eighth of the image's side.
    assert [(header["id"], header["step"]) for header, _ in previews] == [("seen", 5)]
    assert Image.open(io.BytesIO(previews[0][1])).size == (12, 8)
