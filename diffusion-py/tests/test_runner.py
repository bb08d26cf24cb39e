"""The runner as a real subprocess: python -m img2img_runner --model tiny, cwd diffusion-py/."""

import io

import pytest
from PIL import Image

from tests.helpers import RunnerProcess, job_header, png_bytes, sample_image

IMAGE = png_bytes(sample_image(0))
OTHER_IMAGE = png_bytes(sample_image(1))


@pytest.fixture(scope="module")
def bench_log(tmp_path_factory):
    return tmp_path_factory.mktemp("bench") / "bench.csv"


@pytest.fixture(scope="module")
def runner(bench_log):
    """One runner for the module (start-up is most of the cost). max_batch 2 keeps a third job queued."""
    process = RunnerProcess("--max-batch", "2", "--bench-log", str(bench_log))
    ready = process.next(timeout=120)
    assert ready is not None, process.log()
    process.ready = ready[0]
    yield process
    process.close()


def kinds(frames):
    return [header["type"] for header, _ in frames]


def final(frames):
    return frames[-1]


def test_ready_frame(runner):
    ready = runner.ready
    assert list(ready) == ["v", "type", "model", "device", "dtype", "max_batch", "load_seconds"]
    assert ready["v"] == 1 and ready["type"] == "ready"
    assert (ready["model"], ready["device"], ready["dtype"], ready["max_batch"]) == ("tiny", "cpu", "float32", 2)
    assert ready["load_seconds"] > 0


def test_two_jobs_give_two_results_with_progress(runner, bench_log):
    runner.send(job_header("two-a", seed=1), IMAGE)
    runner.send(job_header("two-b", seed=2), OTHER_IMAGE)
    frames = runner.collect(["two-a", "two-b"])
    for job_id, job_frames in frames.items():
        header, payload = final(job_frames)
        assert header["type"] == "result", header
        assert list(header) == ["v", "type", "id", "width", "height", "batch_size", "timings", "peak_memory_bytes", "notes"]
        assert (header["width"], header["height"]) == (64, 64)
        assert list(header["timings"]) == ["decode_s", "compute_s", "encode_s"]
        assert header["peak_memory_bytes"] > 0
        assert header["notes"] == []
        assert Image.open(io.BytesIO(payload)).size == (64, 64)
        assert kinds(job_frames)[0] == "started"
        progress = [h for h, _ in job_frames if h["type"] == "progress"]
        # int(10 * 0.6) = 6 denoising steps, numbered 1..6.
        assert [h["step"] for h in progress] == [1, 2, 3, 4, 5, 6]
        assert all(h["total"] == 6 for h in progress)
    lines = bench_log.read_text().splitlines()
    assert lines[0] == "model;time_seconds;memory_mib"
    assert len(lines) >= 3 and all(line.startswith("tiny;") and len(line.split(";")) == 3 for line in lines[1:])


def test_ping_gets_pong(runner):
    runner.send({"v": 1, "type": "ping"})
    assert runner.next() == ({"v": 1, "type": "pong"}, b"")


def test_garbage_image_is_bad_image_and_runner_keeps_serving(runner):
    runner.send(job_header("garbage"), b"this is not a png")
    runner.send(job_header("after-garbage"), IMAGE)
    frames = runner.collect(["garbage", "after-garbage"])
    error = final(frames["garbage"])[0]
    assert error == {
        "v": 1,
        "type": "error",
        "id": "garbage",
        "code": "bad_image",
        "retryable": False,
        "message": error["message"],
    }
    assert kinds(frames["garbage"]) == ["error"]
    assert final(frames["after-garbage"])[0]["type"] == "result"


def test_an_image_over_its_models_pixel_limit_is_refused(runner):
    # tiny's own limit (common/params.json: 1024x1024), below the general one.
    runner.send(job_header("too-big"), png_bytes(sample_image(0, (1032, 1024))))
    header = final(runner.collect(["too-big"])["too-big"])[0]
    assert (header["type"], header["code"]) == ("error", "bad_image"), header


def test_bad_params_are_refused(runner):
    header = job_header("bad-steps")
    header["params"]["steps"] = 0
    runner.send(header, IMAGE)
    error = final(runner.collect(["bad-steps"])["bad-steps"])[0]
    assert (error["code"], error["retryable"]) == ("bad_params", False)


@pytest.mark.parametrize("raw_header", [b"{not json", b'{"v":1,"type":"hello"}'])
def test_malformed_header_answers_error_with_null_id(runner, raw_header):
    runner.send_raw(len(raw_header).to_bytes(4, "big") + raw_header + (3).to_bytes(4, "big") + b"abc")
    error, _ = runner.next()
    assert error["type"] == "error" and error["id"] is None and error["retryable"] is False
    runner.send({"v": 1, "type": "ping"})
    assert runner.next()[0]["type"] == "pong"


def test_cancel_of_a_queued_job(runner):
    for job_id in ("long-1", "long-2", "long-3"):
        runner.send(job_header(job_id, steps=50, strength=1.0), IMAGE)
    runner.send({"v": 1, "type": "cancel", "id": "long-3"})
    frames = runner.collect(["long-1", "long-2", "long-3"])
    assert final(frames["long-1"])[0]["type"] == "result"
    assert final(frames["long-2"])[0]["type"] == "result"
    # Still queued when canceled: no started, no progress, no result.
    assert kinds(frames["long-3"]) == ["error"]
    error = frames["long-3"][0][0]
    assert (error["code"], error["retryable"]) == ("canceled", False)


def test_cancel_of_a_running_job_stops_it(runner):
    runner.send(job_header("running", steps=50, strength=1.0), IMAGE)
    while True:
        header, _ = runner.next()
        if header["type"] == "progress" and header["id"] == "running":
            break
    runner.send({"v": 1, "type": "cancel", "id": "running"})
    frames = runner.collect(["running"])["running"]
    assert final(frames)[0]["code"] == "canceled"
    assert "result" not in kinds(frames)
    # The interrupted call skipped most of its 50 steps.
    assert len([1 for h, _ in frames if h["type"] == "progress"]) < 49


def test_batched_job_gives_the_same_bytes_as_alone(runner):
    runner.send(job_header("alone", seed=7, prompt="a red fox"), IMAGE)
    alone = final(runner.collect(["alone"])["alone"])
    # A blocker with other params keeps the runner busy so the next two queue up and share a call.
    runner.send(job_header("blocker", steps=30, strength=1.0), IMAGE)
    runner.send(job_header("mate", seed=8, prompt="a blue bird"), OTHER_IMAGE)
    runner.send(job_header("again", seed=7, prompt="a red fox"), IMAGE)
    frames = runner.collect(["blocker", "mate", "again"])
    assert frames["again"][0][0] == {"v": 1, "type": "started", "id": "again", "batch_size": 2}
    again = final(frames["again"])
    assert again[0]["batch_size"] == 2
    assert again[1] == alone[1]
    assert final(frames["mate"])[1] != alone[1]


def test_shutdown_finishes_in_flight_jobs_then_exits_zero(start_runner):
    process = start_runner()
    assert process.next(timeout=120)[0]["type"] == "ready"
    process.send(job_header("last-job"), IMAGE)
    process.send({"v": 1, "type": "shutdown"})
    assert final(process.collect(["last-job"])["last-job"])[0]["type"] == "result"
    assert process.next() is None  # output closed
    assert process.proc.wait(timeout=30) == 0


def test_stdin_eof_is_a_shutdown(start_runner):
    process = start_runner()
    assert process.next(timeout=120)[0]["type"] == "ready"
    process.proc.stdin.close()
    assert process.next() is None
    assert process.proc.wait(timeout=30) == 0


def test_small_image_is_enlarged_to_compute_and_answered_at_its_size(runner):
    # The API accepts sides from 8 pixels; the runner computes on at least 64 and shrinks back.
    runner.send(job_header("small", steps=4, strength=0.5), png_bytes(sample_image(3, (16, 40))))
    header, payload = final(runner.collect(["small"])["small"])
    assert header["type"] == "result", header
    assert (header["width"], header["height"]) == (16, 40)
    assert Image.open(io.BytesIO(payload)).size == (16, 40)


def wait_for_log(process, text: str, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in process.log():
        assert time.monotonic() < deadline, f"no {text!r} in the runner's log:\n{process.log()}"
        time.sleep(0.1)


def test_a_standby_loads_nothing_before_its_start_line_then_serves(start_runner):
    process = start_runner("--standby")
    wait_for_log(process, "waiting for the start line")
    assert "pipeline loaded" not in process.log()  # imported, not loaded: no model in memory yet
    process.send_raw(b"start\n")
    ready = process.next(timeout=120)[0]
    assert ready["type"] == "ready" and ready["model"] == "tiny"
    process.send(job_header("after-standby"), IMAGE)
    assert final(process.collect(["after-standby"])["after-standby"])[0]["type"] == "result"


def test_a_standby_whose_stdin_closes_exits_zero_without_loading(start_runner):
    process = start_runner("--standby")
    wait_for_log(process, "waiting for the start line")
    process.proc.stdin.close()
    assert process.proc.wait(timeout=30) == 0
    assert "pipeline loaded" not in process.log()


BIG_IMAGE = png_bytes(sample_image(2, (512, 512)))


def test_small_and_higher_priority_jobs_overtake_a_running_batch_at_a_step_and_change_no_bytes(runner):
    def alone(header, image):
        runner.send(header, image)
        return final(runner.collect([header["id"]])[header["id"]])[1]

    big_alone = alone(job_header("big-alone", seed=3, steps=30, strength=1.0, priority="low"), BIG_IMAGE)
    small_alone = alone(job_header("small-alone", seed=4, steps=4), IMAGE)

    runner.send(job_header("big", seed=3, steps=30, strength=1.0, priority="low"), BIG_IMAGE)
    order = []
    while True:  # a few steps into the big one
        header, _ = runner.next()
        order.append((header["type"], header["id"]))
        if header["type"] == "progress" and header["step"] == 3:
            break
    runner.send(job_header("small-high", seed=4, steps=4, priority="high"), IMAGE)
    runner.send(job_header("small-normal", seed=4, steps=4), IMAGE)
    frames = {job: [] for job in ("big", "small-high", "small-normal")}
    while any(not kinds(f) or kinds(f)[-1] not in ("result", "error") for f in frames.values()):
        header, payload = runner.next()
        order.append((header["type"], header["id"]))
        frames[header["id"]].append((header, payload))
    sequence = order
    big_steps = [i for i, (kind, job) in enumerate(sequence) if job == "big" and kind == "progress"]
    for small in ("small-high", "small-normal"):
        ended = sequence.index(("result", small))
        # Done between two steps of the big job, which then went on.
        assert big_steps[0] < ended < big_steps[-1], sequence
        assert final(frames[small])[1] == small_alone
    # The overtaken call resumed exactly where it was: the same image as alone.
    assert final(frames["big"])[0]["type"] == "result"
    assert final(frames["big"])[1] == big_alone
