"""The HTTP API fuzzed from its own OpenAPI spec (schemathesis): every operation, with
generated valid and invalid parameters and bodies, with and without the API key. No answer
may be a 5xx, break the documented schema, carry a stack trace or a file-system path, and a
write without the key must never get through."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from semrec.config import load_settings
from semrec.serving.api import ApiService, create_app
from tests.test_api import built_home  # noqa: F401 - the shared, indexed home

KEY = "fuzz-key"
SENT: Counter[str] = Counter()
_PATH = re.compile(r"/(?:tmp|home|etc|usr|work|var|root)/")


@pytest.fixture(scope="module")
def service(built_home: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201, F811
    home = Path(shutil.copytree(built_home, tmp_path_factory.mktemp("fuzz") / "home"))
    settings_ = load_settings(home=home).model_copy(update={"api_key": SecretStr(KEY)})
    service = ApiService(settings_)
    yield service
    service.close()
    print(f"\nfuzzed requests: {sum(SENT.values())} {dict(SENT)}")


@pytest.fixture(scope="module")
def operations(service: ApiService) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    return [result.ok() for result in schema.get_all_operations()]


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_api_survives_fuzzing(operations: list, data: st.DataObject) -> None:
    operation = data.draw(st.sampled_from(operations))
    case = data.draw(operation.as_strategy())
    writes = case.method.upper() in {"PUT", "DELETE"} or case.path == "/events"
    keyed = writes and data.draw(st.integers(0, 3)) != 0  # now and then a write without key
    case.headers = {k: v for k, v in (case.headers or {}).items()
                    if k.lower() not in {"x-api-key", "authorization"}}
    if keyed:
        case.headers["X-API-Key"] = KEY
    response = case.call()
    SENT[f"{case.method.upper()} {case.path} {response.status_code}"] += 1
    assert response.status_code < 500, response.text
    if writes and not keyed:
        assert response.status_code in (401, 413, 422), response.text
    if response.status_code >= 400:
        body = response.text
        assert "Traceback" not in body and not _PATH.search(body), body
        assert isinstance(response.json()["detail"], str)
    else:
        case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
