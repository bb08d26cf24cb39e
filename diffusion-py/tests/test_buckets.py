"""Padded batch buckets (the `graphs` tuning's CUDA graphs need few distinct batch sizes), on CPU with tiny."""

import pytest
import torch

from img2img_runner.jobs import parse_job
from img2img_runner.models import load_pipeline
from img2img_runner.protocol import TO_RUNNER, parse
from img2img_runner.runner import bucket_for
from img2img_runner.tuning import TUNINGS, Tuning
from img2img_runner.warmup import BATCH_CAP, _warm_up
from tests.helpers import job_header, on_each_call, png_bytes, run_one_batch, sample_image

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "count, buckets, expected",
    [(1, (1, 2, 4), 1), (3, (1, 2, 4), 4), (4, (4, 2, 1), 4), (5, (1, 2, 4), 5), (3, (), 3)],
)
def test_bucket_for(count, buckets, expected):
    assert bucket_for(count, buckets) == expected


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline("tiny", device=CPU)
    rows = []
    on_each_call(pipe, lambda kwargs: rows.append(len(kwargs["prompt"])))
    pipe.rows = rows
    return pipe


def jobs(count):
    return [
        parse_job(parse(job_header(f"job-{i}", seed=i, steps=4, prompt=f"prompt {i}"), TO_RUNNER), png_bytes(sample_image(i)), "tiny")
        for i in range(count)
    ]


def results(runner_jobs, pipe, **options):
    """Run one batch through Runner._run_batch; return {job id: PNG bytes} and the frames' batch sizes."""
    frames = run_one_batch(pipe, runner_jobs, **options)
    return {header["id"]: (payload, header["batch_size"]) for header, payload in frames if header["type"] == "result"}


def test_a_batch_is_padded_to_its_bucket_and_the_pad_rows_are_dropped(pipe):
    alone = {job.id: results([job], pipe, max_batch=4)[job.id][0] for job in jobs(3)}
    pipe.rows.clear()
    padded = results(jobs(3), pipe, max_batch=4, buckets=(1, 2, 4))
    assert pipe.rows == [4]  # 3 jobs computed as 4 rows
    assert sorted(padded) == ["job-0", "job-1", "job-2"]  # one result per job, none for the pad row
    for job_id, (payload, batch_size) in padded.items():
        assert batch_size == 3  # what the job shared, not the padding
        assert payload == alone[job_id]  # the pad rows change no job's bytes


def test_no_padding_past_max_batch(pipe):
    # An out-of-memory lowered max_batch below the bucket: the call keeps its own size.
    pipe.rows.clear()
    assert len(results(jobs(2), pipe, max_batch=2, buckets=(4,))) == 2
    assert pipe.rows == [2]


def test_the_warm_up_records_every_bucket_up_to_a_largest_batch_that_is_a_bucket(monkeypatch):
    import img2img_runner.warmup as tuning

    ran = []
    monkeypatch.setattr(tuning, "run_batch", lambda pipe, device, batch, size: ran.append(batch))
    pipe = load_pipeline("tiny", device=CPU)
    pipe._img2img_tuning = Tuning("t", buckets=(1, 2, 4, 8))
    assert _warm_up(pipe, CPU, 6, (64, 64)) == 4
    assert ran[-3:] == [1, 2, 4]


def test_the_graphs_tuning_pads_and_compiles_first():
    graphs = TUNINGS["graphs"]
    assert graphs.compile_mode == "reduce-overhead" and graphs.buckets and not graphs.background
    assert max(graphs.buckets) == BATCH_CAP
