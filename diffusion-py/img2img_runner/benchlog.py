"""The ';'-delimited benchmark log: one line per finished job."""

import os

HEADER = "model;time_seconds;memory_mib"


def append_bench_line(path: str, model: str, time_seconds: float, memory_bytes: int) -> None:
    is_new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", encoding="utf-8") as handle:
        if is_new:
            handle.write(HEADER + "\n")
        handle.write(f"{model};{time_seconds:.4f};{memory_bytes / 2**20:.1f}\n")
