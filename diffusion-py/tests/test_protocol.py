"""The declared protocol (img2img_runner/protocol.py) against the shared vectors, and its shape checks."""

import pytest

from img2img_runner.frames import encode_frame
from img2img_runner.protocol import (
    ALL,
    FROM_RUNNER,
    TO_RUNNER,
    ErrorFrame,
    JobFrame,
    JobParams,
    ProtocolError,
    ReadyFrame,
    ResultFrame,
    Timings,
    parse,
)
from tests.test_frames import VECTORS


def test_every_message_kind_has_a_vector():
    assert {vector["header"]["type"] for vector in VECTORS} == set(ALL)


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector_parses_into_its_type_and_serialises_to_the_same_bytes(vector):
    message = parse(vector["header"])
    assert type(message) is ALL[vector["header"]["type"]]
    assert message.header() == vector["header"]
    assert encode_frame(message.header(), bytes.fromhex(vector["payload_hex"])).hex() == vector["frame_hex"]


def test_built_messages_keep_the_wire_key_order():
    ready = ReadyFrame(model="tiny", device="cpu", dtype="float32", max_batch=4, load_seconds=0.5)
    assert list(ready.header()) == ["v", "type", "model", "device", "dtype", "max_batch", "load_seconds"]
    result = ResultFrame(id="a", width=1, height=2, batch_size=1, timings=Timings(0.1, 0.2, 0.3), peak_memory_bytes=5, notes=[])
    assert list(result.header()) == ["v", "type", "id", "width", "height", "batch_size", "timings", "peak_memory_bytes", "notes"]
    assert list(result.header()["timings"]) == ["decode_s", "compute_s", "encode_s"]
    assert ErrorFrame.of(None, "oom", "x").retryable is True
    assert ErrorFrame.of("a", "bad_image", "x").retryable is False


def job(**params) -> dict:
    base = {"prompt": "a cat", "negative_prompt": None, "strength": 0.6, "steps": 10, "guidance_scale": 7.5, "seed": 1, "preview_every": 0}
    return {"v": 1, "type": "job", "id": "job-1", "priority": "normal", "params": base | params}


def test_job_parses_to_typed_params():
    message = parse(job(), TO_RUNNER)
    assert message == JobFrame(id="job-1", priority="normal", params=JobParams("a cat", None, 0.6, 10, 7.5, 1, 0))


@pytest.mark.parametrize(
    ("header", "job_id", "text"),
    [
        ({"v": 1, "type": "hello", "id": "x"}, None, "unknown frame type 'hello'"),
        ({"v": 1, "type": "pong"}, None, "unknown frame type 'pong'"),  # ours to send, not to receive
        ({"v": 1, "type": "job", "id": "", "priority": "normal", "params": job()["params"]}, None, "job.id must be a non-empty string"),
        ({"v": 1, "type": "job", "id": 7, "priority": "normal", "params": job()["params"]}, None, "job.id must be a non-empty string"),
        ({"v": 1, "type": "job", "id": "j", "priority": "normal"}, "j", "job.params must be an object"),
        ({"v": 1, "type": "job", "id": "j", "params": job()["params"]}, "j", "job.priority must be a string"),
        (job(prompt=None), "job-1", "params.prompt must be a string"),
        (job(negative_prompt=3), "job-1", "params.negative_prompt must be a string or null"),
        (job(strength="0.5"), "job-1", "params.strength must be a number, got '0.5'"),
        (job(strength=float("inf")), "job-1", "params.strength must be a number"),
        (job(guidance_scale=True), "job-1", "params.guidance_scale must be a number, got True"),
        (job(steps=1.5), "job-1", "params.steps must be an integer, got 1.5"),
        (job(seed=None), "job-1", "params.seed must be an integer, got None"),
        ({"v": 1, "type": "cancel"}, None, "cancel.id must be a non-empty string"),
    ],
)
def test_shape_errors_name_the_field_and_keep_a_usable_id(header, job_id, text):
    with pytest.raises(ProtocolError) as error:
        parse(header, TO_RUNNER)
    assert text in str(error.value)
    assert error.value.id == job_id


@pytest.mark.parametrize("notes", ["one note", [1], None])
def test_result_notes_must_be_a_list_of_strings(notes):
    header = ResultFrame(id="a", width=1, height=2, batch_size=1, timings=Timings(0.1, 0.2, 0.3), peak_memory_bytes=5, notes=["ok"]).header()
    assert parse(header, FROM_RUNNER).notes == ["ok"]
    with pytest.raises(ProtocolError, match="result.notes must be a list of strings"):
        parse(header | {"notes": notes}, FROM_RUNNER)
