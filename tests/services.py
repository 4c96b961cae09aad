"""Where the real services started by ``scripts/services.sh`` live.

A test that needs a service calls :func:`require`; when the variable is not
set the test fails with a clear message. It never skips: in CI a missing
service is a failure.
"""

from __future__ import annotations

import os

import pytest


def require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: start the test services with `scripts/services.sh start` "
            "and source the env file it prints (make test does both)",
            pytrace=False,
        )
    return value
