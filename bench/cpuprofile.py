"""Where a Node process' CPU time went: self time of a V8 .cpuprofile by package and by function,
and the time spent under each package or project file (a sample counts once for each on its stack).

    python3 bench/cpuprofile.py [--window SECONDS] PROFILE.cpuprofile [...]
        (from `npm run bench:pipeline -- --cpu-prof DIR`)

--window keeps the busiest SECONDS of the profile (the saturation run, without the start-up's
module loading) and leaves out idle samples, so the shares are of the time the main thread was
busy. V8 samples by wall time: on shared cores a share includes time the thread was preempted.
Native work on libuv's threads (sharp's image decoding, zlib in the pool) is not in a profile.
"""

import argparse
import collections
import json
import re

IDLE = "(idle)"


def where(call_frame: dict) -> str:
    """The package of a frame (node_modules/<name>), else the project file, else V8's own label."""
    url = call_frame["url"]
    found = re.search(r"node_modules/((@[^/]+/)?[^/]+)", url)
    if found:
        return found.group(1)
    return url.split("/", 3)[-1] if url.startswith("file://") else (url or call_frame["functionName"])


def busiest(samples: list[tuple[int, int, int]], is_idle, seconds: float) -> tuple[int, int]:
    """The start and end time (µs) of the `seconds` long stretch with the most busy samples."""
    busy = [(at, micros) for node, at, micros in samples if not is_idle(node)]
    best, start, first, total = -1, 0, 0, 0
    for last, (at, micros) in enumerate(busy):
        total += micros
        while at - busy[first][0] > seconds * 1e6:
            total -= busy[first][1]
            first += 1
        if total > best:
            best, start = total, busy[first][0]
    return start, start + int(seconds * 1e6)


def summary(path: str, window: float | None, top: int = 12) -> None:
    with open(path, encoding="utf-8") as handle:
        profile = json.load(handle)
    nodes = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    parent = {child: node["id"] for node in profile["nodes"] for child in node.get("children", [])}
    is_idle = lambda node: nodes[node]["functionName"] == IDLE  # noqa: E731
    at, samples = profile["startTime"], []
    for node, micros in zip(profile["samples"], profile["timeDeltas"]):
        at += micros
        samples.append((node, at, micros))
    if window:
        start, end = busiest(samples, is_idle, window)
        samples = [(node, at, micros) for node, at, micros in samples if start <= at <= end and not is_idle(node)]
    by_node = collections.Counter()
    for node, _, micros in samples:
        by_node[node] += micros
    total = sum(by_node.values()) or 1
    by_package, by_function, under = collections.Counter(), collections.Counter(), collections.Counter()
    for node, micros in by_node.items():
        frame = nodes[node]
        by_package[where(frame)] += micros
        by_function[f"{frame['functionName'] or '(anonymous)'} {where(frame)}:{frame['lineNumber'] + 1}"] += micros
        stack, up = set(), node
        while up in nodes:
            if nodes[up]["url"].startswith("file://"):  # a package's or the project's code, not Node's own
                stack.add(where(nodes[up]))
            up = parent.get(up)
        for package in stack:
            under[package] += micros
    print(f"{path}: {total / 1e6:.1f} s sampled" + (f" (busy, in the busiest {window:g} s)" if window else ""))
    for title, counts in (("package (self)", by_package), ("function (self)", by_function), ("package or project file (under it)", under)):
        print(f"  by {title}:")
        for name, micros in counts.most_common(top):
            print(f"    {micros / total * 100:5.1f}%  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, help="keep the busiest SECONDS of each profile, without idle samples")
    parser.add_argument("profiles", nargs="+")
    arguments = parser.parse_args()
    for argument in arguments.profiles:
        summary(argument, arguments.window)
