"""The HTTP API fuzzed from its own OpenAPI schema: whatever a client sends, no 5xx, and every error is JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server needs the [server] extra")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lookalike.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def operations(built_index: Path) -> dict[str, Any]:
    # Every Host accepted: the Host check is tested in test_server.py; here every request reaches a route.
    app = create_app(built_index, allowed_hosts=["*"], max_upload_bytes=2_000_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


ROUTES = [
    "POST /api/search",
    "GET /api/search",
    "GET /api/images/{image_id}",
    "GET /api/thumbs/{image_id}",
    "GET /api/stats",
    "GET /healthz",
]


def test_the_schema_lists_every_route(operations: dict[str, Any]) -> None:
    assert set(ROUTES) <= set(operations)


@pytest.mark.parametrize("route", ROUTES)
def test_no_request_gets_a_server_error(operations: dict[str, Any], route: str) -> None:
    strategy = operations[route].as_strategy()

    @given(case=strategy)
    @settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def property_holds(case: Any) -> None:
        response = case.call()
        assert response.status_code < 500, (route, response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert "error" in response.json(), response.text[:300]

    property_holds()


@given(st.integers(min_value=-(2**70), max_value=2**70))
@settings(max_examples=30, deadline=None, derandomize=True)
def test_any_integer_id_is_a_4xx_or_a_result(built_index_app_client: Any, image_id: int) -> None:
    response = built_index_app_client.get("/api/search", params={"id": str(image_id), "k": "3"})
    assert response.status_code in (200, 404, 422) and ("results" in response.json() or "error" in response.json())


@pytest.fixture(scope="module")
def built_index_app_client(built_index: Path) -> Any:
    from fastapi.testclient import TestClient

    with TestClient(create_app(built_index), base_url="http://localhost") as client:
        yield client
