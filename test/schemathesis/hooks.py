"""Schemathesis hooks for scripts/schemathesis: the rules of POST /api/diffusion that OpenAPI
cannot state, applied to the requests schemathesis means to be valid (positive cases), so that
its check "a schema-valid request is accepted" tests everything else. docs/API.md lists them:

1. The image must be a decodable PNG, JPEG or WebP whose size the model can compute.
2. A field may come as a query parameter or a form field; if both, with the same value.
3. model_name and prompt are required, in one of the two.
4. floor(steps * strength) must be at least one denoising step (steps defaults per model).
5. An Idempotency-Key names one request: reused with another request it answers 409.
6. webhook_url must name a public address (checked on the parsed URL), and webhook_events
   needs a webhook_url.
7. A deadline must lie ahead, within 7 days: start_by's time and Cancel-After's duration.

Negative cases are left as generated: each must still be refused.
"""

import io
import math
import uuid

import schemathesis
from PIL import Image

DIFFUSION = "/api/diffusion"
# The defaults of common/params.json for tiny, the model the API under test serves.
DEFAULT_STEPS = 10
DEFAULT_STRENGTH = 0.6
# Stored with the job only: no dispatcher runs beside the API under test, so nothing is sent.
WEBHOOK_URL = "https://example.com/hooks/img2img"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def _number(value, fallback: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return fallback


def _valid(case) -> bool:
    """Whether schemathesis means the case to be valid: generated as positive, or an example."""
    if case.operation.path != DIFFUSION or case.method.upper() != "POST" or not isinstance(case.body, dict):
        return False
    return case.meta is None or case.meta.generation.mode.is_positive


@schemathesis.hook
def before_add_examples(ctx, examples):
    for case in examples:
        map_case(ctx, case)


@schemathesis.hook
def map_case(ctx, case):
    if not _valid(case):
        return case
    query, form = case.query if isinstance(case.query, dict) else {}, case.body
    form["image"] = PNG  # rule 1
    for name in list(form):  # rule 2
        if name != "image" and name in query:
            del form[name]
    for name, value in (("model_name", "tiny"), ("prompt", "a lighthouse")):  # rule 3
        if name not in query and name not in form:
            query[name] = value
    sent = {**query, **form}
    steps = _number(sent.get("steps"), DEFAULT_STEPS)
    if math.floor(steps * _number(sent.get("strength"), DEFAULT_STRENGTH)) < 1:  # rule 4
        (form if "strength" in form else query)["strength"] = "1"
    if "webhook_url" in sent:  # rule 6
        (form if "webhook_url" in form else query)["webhook_url"] = WEBHOOK_URL
    elif "webhook_events" in sent:
        (form if "webhook_events" in form else query).pop("webhook_events")
    if "start_by" in sent:  # rule 7
        (form if "start_by" in form else query)["start_by"] = "3600"
    if case.headers and "cancel-after" in case.headers:
        case.headers["cancel-after"] = "1h"
    if case.headers and "idempotency-key" in case.headers:  # rule 5
        case.headers["idempotency-key"] = uuid.uuid4().hex
    case.query = query
    return case
