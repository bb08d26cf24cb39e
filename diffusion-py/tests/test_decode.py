"""A job's image decodes off the frame reader: cancel and ping are answered while it decodes."""

import os
import select
import threading

import torch

from img2img_runner import runner as runner_module
from img2img_runner.frames import encode_frame, read_frame
from img2img_runner.runner import FrameWriter, Runner
from img2img_runner.standin import SleepingPipeline, echo_input, parse_latencies
from tests.helpers import job_header, png_bytes, sample_image


def test_cancel_reaches_a_job_whose_image_is_still_decoding(monkeypatch):
    decoding, release = threading.Event(), threading.Event()
    real_parse = runner_module.parse_job

    def slow_parse(message, payload, model=None, family=None):  # an image that takes long to decode
        decoding.set()
        assert release.wait(30)
        return real_parse(message, payload, model, family)

    monkeypatch.setattr(runner_module, "parse_job", slow_parse)
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    runner = Runner(
        pipe=SleepingPipeline(parse_latencies('{"1": 1}')),
        model="standin",
        device=torch.device("cpu"),
        max_batch=1,
        writer=FrameWriter(os.fdopen(stdout_w, "wb")),
        encoder=echo_input,
    )
    exit_code = []
    server = threading.Thread(target=lambda: exit_code.append(runner.serve(os.fdopen(stdin_r, "rb", buffering=0))), daemon=True)
    server.start()
    frames_in = os.fdopen(stdin_w, "wb", buffering=0)
    frames_out = os.fdopen(stdout_r, "rb", buffering=0)

    def next_frame():
        ready, _, _ = select.select([stdout_r], [], [], 10)
        assert ready, "no frame within 10 s"
        return read_frame(frames_out)

    frames_in.write(encode_frame(job_header("slow"), png_bytes(sample_image(0))))
    assert decoding.wait(30)
    frames_in.write(encode_frame({"v": 1, "type": "cancel", "id": "slow"}) + encode_frame({"v": 1, "type": "ping"}))
    header, _ = next_frame()
    assert header == {"v": 1, "type": "pong"}  # answered while the image was still decoding

    release.set()
    header, _ = next_frame()
    assert (header["type"], header["id"], header["code"]) == ("error", "slow", "canceled")
    frames_in.close()
    server.join(30)
    assert exit_code == [0]
