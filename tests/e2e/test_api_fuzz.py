"""Schema-driven fuzzing of the running broker: no generated input makes it answer 5xx.

schemathesis reads the server's own OpenAPI document and generates requests for
every operation (bodies, query strings, path parameters, headers), sent with a
requester's and an approver's real dev tokens against a broker on SQLite with a
real PostgreSQL target. A 5xx means the broker failed on input it should have
refused: the test fails and prints the request to replay. The budget is a fixed
number of examples per operation with a fixed seed (``BG_FUZZ_EXAMPLES``, 15 by
default in ``make test``; ``make fuzz`` runs a larger one).
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("BG_FUZZ_EXAMPLES", "15"))
USERS = ("uma", "vera")


@pytest.fixture(scope="module")
def api_schema(broker_server: str) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(broker_server + "/openapi.json")
    loaded.config.update(base_url=broker_server)
    return loaded


@pytest.fixture(scope="module")
def tokens(broker_server: str) -> dict[str, str]:
    found = {}
    for user in USERS:
        issued = httpx.post(broker_server + "/v1/dev/token", json={"username": user}, timeout=30)
        issued.raise_for_status()
        found[user] = issued.json()["access_token"]
    return found


def test_no_generated_input_makes_the_broker_fail(api_schema: schemathesis.BaseSchema,
                                                   tokens: dict[str, str]) -> None:
    """Every operation of the OpenAPI document, EXAMPLES generated cases each, as each user.

    Driven through hypothesis directly (one ``@given`` per operation) rather than the
    schemathesis pytest plugin, so one failing operation does not hide the others:
    every 5xx found is reported together."""
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            for user in USERS:
                response = case.call(headers={"Authorization": f"Bearer {tokens[user]}"},
                                     timeout=30)
                assert response.status_code < 500, (
                    f"{response.status_code} as {user} for {case.method} "
                    f"{case.formatted_path}: {response.text[:300]}\n"
                    f"replay: {case.as_curl_command()}")

        try:
            fuzz()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0] + "\n" + str(exc)[:1200])
    assert operations > 20
    assert not failures, "\n\n".join(failures)
