"""Test guest: reads time and randomness through Python's own modules and
returns what it saw. On replay it must see exactly the same values."""

import random
import time
import uuid

import cairn


def observe(ctx, _input):
    before = time.time()
    monotonic = time.monotonic()
    sample = random.random()
    ident = str(uuid.uuid4())
    ctx.sleep(0.03)
    return {
        "before_ms": round(before * 1000),
        "after_ms": round(time.time() * 1000),
        "monotonic_elapsed_ms": round((time.monotonic() - monotonic) * 1000),
        "random": sample,
        "uuid": ident,
        "sdk_random": ctx.random(),
    }


WitWorld = cairn.workflow(observe)
