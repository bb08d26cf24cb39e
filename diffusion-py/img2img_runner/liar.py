"""A worker that lies, for the tests of result verification: `--source liar:[SOURCE]` serves the
model SOURCE names (the built-in one when empty) and inverts every image it answers with. Like
`standin:`, a source that exists for tests and benchmarks, not a setting of a real deployment."""

from PIL import ImageOps

from .runner import encode_png

PREFIX = "liar:"


def lying(encoder):
    """Wraps a result encoder (None: the runner's default, PNG) so that every image comes out inverted."""

    def lie(job, image):
        return (encoder or encode_png)(job, ImageOps.invert(image.convert("RGB")))

    return lie
