"""The API against its own OpenAPI spec: schemathesis, every check, in-process through the ASGI app.

Every operation of ``/openapi.json`` gets its explicit examples, the coverage phase (boundary values: huge
integers, NUL characters, empty strings, wrong types, missing fields), a bounded number of fuzzed cases, and the
stateful phase (sequences along the spec's links: create, read, delete, read again), with the admin key. Each
response must match its documented status codes, headers and schema, never be a 5xx, and answer within the time
bound. The dataset is tiny (a few items and users); the service is warmed up first
(as ``llmrec serve`` does at start), so no case pays for loading the text encoder.

Two allowances, each a status the spec documents:

* 413 counts as rejecting a schema-violating body (a text longer than ``maxLength`` is also over the body limit);
* on the recommendations routes a schema-valid request may get 400: a genre must be one of the catalogue's (data,
  not schema), and with ``rerank`` ``k`` may not exceed the pipeline's candidates (one field bounding another).
  The 400 names the field and the fix;
* ``POST /v1/interactions`` may answer 422 ``data_validation_error``: every item must be in the catalogue, and a
  feedback event (``thumbs_up``...) takes the feedback route's values (data and cross-field rules the spec cannot
  state; the value's range is in the spec). Every other operation must accept every schema-valid request.
"""

from __future__ import annotations

import pytest
import schemathesis
from api_support import ADMIN, serve_config, tiny_dataset

from llmrec.data.store import Store
from llmrec.serve import RecommenderService, create_app

MAX_EXAMPLES = 15
"""Fuzzed cases per operation (the coverage phase adds its boundary cases on top)."""

MAX_RESPONSE_S = 10.0
"""No response may take longer than this."""


def _run(app: object) -> tuple[list[str], int, float]:
    """Run schemathesis as ``st run --checks all`` would, in-process; returns failures, cases and slowest."""
    from schemathesis.config import SchemathesisConfig
    from schemathesis.config._checks import (
        NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
        POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
    )
    from schemathesis.engine import events, from_schema

    rejected = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    config = SchemathesisConfig.from_dict(
        {
            "seed": 1,
            "headers": dict(ADMIN),
            "checks": {
                "enabled": True,
                "max_response_time": MAX_RESPONSE_S,
                "negative_data_rejection": {"expected-statuses": rejected},
            },
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {"stateful": {"enabled": True}},  # links between operations: use after delete, etc.
            "operations": [
                {
                    "include-path-regex": "/recommendations$",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400"]
                        },
                        "negative_data_rejection": {"expected-statuses": rejected},
                    },
                },
                {
                    "include-path": "/v1/interactions",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "422"]
                        },
                        "negative_data_rejection": {"expected-statuses": rejected},
                    },
                },
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    failures: list[str] = []
    cases = 0
    slowest = 0.0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, node in event.recorder.cases.items():
                cases += 1
                for check in event.recorder.checks.get(case_id, []):
                    if check.failure_info is not None:
                        info = check.failure_info
                        seen = event.recorder.interactions.get(case_id)
                        answer = seen.response if seen is not None else None
                        got = "" if answer is None else f"{answer.status_code} {answer.content[:300]!r}"
                        failures.append(
                            f"{node.value.operation.label}: {check.name}: {info.failure.title}\n"
                            f"  {info.failure.message[:400]}\n  {info.code_sample[:400]}\n  -> {got}"
                        )
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    slowest = max(slowest, interaction.response.elapsed)
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sorted(set(failures)), cases, slowest


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_every_operation_meets_its_contract(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/llmrec.db")
    store.ingest(tiny_dataset(), name="tiny")
    service = RecommenderService(store, serve_config("tiny", max_request_bytes=1_048_576))
    service.warm_up()
    failures, cases, slowest = _run(create_app(service))
    assert not failures, "\n".join(failures)
    assert cases > 200, cases
    assert slowest < MAX_RESPONSE_S, slowest
