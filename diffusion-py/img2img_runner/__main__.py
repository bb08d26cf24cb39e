"""python -m img2img_runner: the entry point, which readies the process before anything is imported (cli.py does the rest)."""

import logging
import os
import sys


def _take_stdout():
    """Keep the real stdout for frames; send everything else written to stdout to stderr.

    Libraries print (and C code writes to fd 1); any stray byte would corrupt the frame stream.
    """
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frames_out


def main(argv=None) -> int:
    frames_out = _take_stdout()
    # Never download weights: models come from local folders or the offline HF cache.
    os.environ["HF_HUB_OFFLINE"] = "1"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported only now: libraries may write to fd 1 as they load, and huggingface_hub reads HF_HUB_OFFLINE once, at import.
    from .cli import run

    return run(argv, frames_out)


if __name__ == "__main__":
    sys.exit(main())
