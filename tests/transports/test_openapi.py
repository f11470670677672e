"""`GET /api/openapi.json`: an OpenAPI 3.1 document of `/api/*` made from the structs the
endpoints decode and answer; schemathesis fuzzes a live `tidings serve` against it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.transports.serve_process import SERVE, child_env, serving
from tidings.transports import http_api, openapi
from tidings.transports.release import version

API_KEY = "openapi-test-key"


def test_the_document_has_the_openapi_3_1_shape_for_every_api_route() -> None:
    doc = openapi.document(version())
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == version()
    assert set(doc["paths"]) == {f"/api/{name}" for name in http_api.API}
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        post = item["post"]
        body_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        answer_ref = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        for ref in (body_ref, answer_ref):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
        assert {"400", "401", "503"} <= set(post["responses"]), path
    # generated from the structs: a body's required fields are the struct's
    events = schemas["EventBody"]
    assert set(events["required"]) == {"profile", "metric", "time"}
    assert schemas["ProfileFields"]["additionalProperties"] is False
    assert schemas["Profile"]["properties"]["consent"] == {"$ref": "#/components/schemas/Consent"}


async def test_schemathesis_finds_no_server_error_and_no_answer_off_schema(tmp_path: Path) -> None:
    env = child_env({"TIDINGS_API__KEYS": f'["{API_KEY}"]'})
    command = [*SERVE, "--port", "0", "--store", f"sqlite:///{tmp_path / 'tidings.db'}"]
    async with serving(command, env) as served:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{served.base}/api/openapi.json")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == openapi.document(version())
        done = await trio.run_process(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{served.base}/api/openapi.json",
                "--checks", "not_a_server_error,response_schema_conformance,"
                "status_code_conformance,content_type_conformance",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "100", "--seed", "15",
                "--header", f"Authorization: Bearer {API_KEY}",
                "--generation-database", "none",
                "--report-dir", str(tmp_path / "report"),
            ],
            capture_stdout=True, stderr=subprocess.STDOUT, check=False, cwd=tmp_path,
        )  # fmt: skip
    output = done.stdout.decode()
    assert done.returncode == 0, output
    tested = re.search(r"(\d+) generated, \1 passed", output)
    assert tested and int(tested[1]) >= 200, output  # every generated case passed every check
