"""Where a Node process' CPU time went: self time of a V8 .cpuprofile by package and by function.

    python3 bench/cpuprofile.py PROFILE.cpuprofile [...]  (from `npm run bench:pipeline -- --cpu-prof DIR`)

Native work on libuv's threads (sharp's image decoding, zlib in the pool) is not in a profile.
"""

import collections
import json
import re
import sys


def where(call_frame: dict) -> str:
    """The package of a frame (node_modules/<name>), else the project file, else V8's own label."""
    url = call_frame["url"]
    found = re.search(r"node_modules/((@[^/]+/)?[^/]+)", url)
    if found:
        return found.group(1)
    return url.split("/", 3)[-1] if url.startswith("file://") else (url or call_frame["functionName"])


def summary(path: str, top: int = 12) -> None:
    with open(path, encoding="utf-8") as handle:
        profile = json.load(handle)
    nodes = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    by_node = collections.Counter()
    for node, delta in zip(profile["samples"], profile["timeDeltas"]):
        by_node[node] += delta
    total = sum(by_node.values()) or 1
    by_package, by_function = collections.Counter(), collections.Counter()
    for node, micros in by_node.items():
        frame = nodes[node]
        by_package[where(frame)] += micros
        by_function[f"{frame['functionName'] or '(anonymous)'} {where(frame)}:{frame['lineNumber'] + 1}"] += micros
    print(f"{path}: {total / 1e6:.1f} s sampled")
    for title, counts in (("package", by_package), ("function", by_function)):
        print(f"  by {title}:")
        for name, micros in counts.most_common(top):
            print(f"    {micros / total * 100:5.1f}%  {name}")


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        summary(argument)
