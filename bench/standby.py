"""Start cost of a runner spawned cold against one taken over from a standby (RUNNER_STANDBY).

    diffusion-py/.venv/bin/python bench/standby.py [--rounds 3] [--model tiny] [-- runner args]

Cold: Popen to the ready frame. Standby: a `--standby` runner whose imports have finished (its
log says it waits), then the `start` line to the ready frame: what the next job after an idle
unload waits for. Both in the same run, alternating; prints each round and the median ratio.
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

RUNNER_DIR = pathlib.Path(__file__).resolve().parents[1] / "diffusion-py"
sys.path.insert(0, str(RUNNER_DIR))

from img2img_runner.frames import read_frame  # noqa: E402


def start(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "img2img_runner", *args], cwd=RUNNER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)


def ready(proc: subprocess.Popen) -> dict:
    header, _payload = read_frame(proc.stdout)
    assert header["type"] == "ready", header
    return header


def stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=60)


def cold(args: list[str]) -> float:
    with tempfile.TemporaryFile() as log:
        began = time.perf_counter()
        proc = start(args, log)
        ready(proc)
        seconds = time.perf_counter() - began
        stop(proc)
    return seconds


def from_standby(args: list[str]) -> float:
    with tempfile.NamedTemporaryFile() as log:
        proc = start([*args, "--standby"], log)
        while b"waiting for the start line" not in pathlib.Path(log.name).read_bytes():
            assert proc.poll() is None, pathlib.Path(log.name).read_text()
            time.sleep(0.05)
        began = time.perf_counter()
        proc.stdin.write(b"start\n")
        proc.stdin.flush()
        ready(proc)
        seconds = time.perf_counter() - began
        stop(proc)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("runner_args", nargs="*", help="more runner arguments (after --)")
    options = parser.parse_args()
    args = ["--model", options.model, "--device", "cpu", *options.runner_args]
    colds, standbys = [], []
    for round_ in range(1, options.rounds + 1):
        colds.append(cold(args))
        standbys.append(from_standby(args))
        print(f"round {round_}: cold spawn to ready {colds[-1]:.2f} s, standby start to ready {standbys[-1]:.2f} s", flush=True)
    ratio = statistics.median(colds) / statistics.median(standbys)
    print(f"median: cold {statistics.median(colds):.2f} s, standby {statistics.median(standbys):.2f} s: {ratio:.2f}x faster from a standby")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
