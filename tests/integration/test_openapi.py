"""The OpenAPI document tells the truth: schemathesis fuzzes a real API process against it.

``st run`` goes through every phase (examples, coverage, fuzzing, and stateful, where a new
job's links lead to its routes) with a fixed seed and a bounded number of examples, and runs
the checks ``schemathesis.toml`` enables: no 5xx, no status the document does not list, and
bodies, headers and content types as documented, among others. No workers serve its
database, so jobs stay queued; the submit-time URL check is off, so no request leaves the
machine.

The fuzzer presents an admin key, so ``/v1/keys`` is fuzzed too, except ``DELETE
/v1/keys/{prefix}``: ``GET /v1/keys`` lists the fuzzer's own prefix, and revoking its own key
would turn the rest of the run into 401s. That operation's answers are checked by hand here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from service.auth.keys import key_prefix
from service.cli.processes import migrate
from service.core.settings import Settings
from tests.conftest import ROOT, bearer, make_key, recreate_database, start_api

SEED = 20250601
# About 40 s of fuzzing on two cores; README's command has no bound.
MAX_EXAMPLES = 100
# The operations that need an existing job: the stateful phase and the fuzzer's reuse of
# the ids it saw must reach them with one.
JOB_OPERATIONS = (
    "GET /v1/jobs/{job_id}",
    "GET /v1/jobs/{job_id}/events",
    "POST /v1/jobs/{job_id}/cancel",
    "DELETE /v1/jobs/{job_id}",
)


@dataclass(frozen=True)
class FuzzTarget:
    """A running API and the admin key the fuzzer presents."""

    base_url: str
    key: str
    settings: Settings

    @property
    def schema_url(self) -> str:
        """Where the API serves its OpenAPI document."""
        return f"{self.base_url}/schema/openapi.json"


@pytest.fixture(scope="module")
def target(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """A real API process (granian) with no URL check, on a database of its own: the
    session's relay and workers (running once an end-to-end module started them) serve the
    test database, and would otherwise finish the fuzzed jobs before their routes are tried.
    Their messages still reach the session's broker; a worker finds no such job and skips it.
    """
    fuzz = dataclasses.replace(settings, database_url=f"{settings.database_url}_fuzz")
    asyncio.run(recreate_database(fuzz.database_url))
    migrate(fuzz)
    process, base = start_api(
        fuzz, tmp_path_factory.mktemp("openapi-api"), url_check_timeout_seconds=0
    )
    try:
        yield FuzzTarget(base, make_key(fuzz, "schemathesis", admin=True), fuzz)
    finally:
        process.stop()


def st_run(target: FuzzTarget, report_dir: Path) -> subprocess.CompletedProcess[str]:
    """README's ``st run`` (``schemathesis.toml``), with a seed and bounded examples."""
    command = [
        *(sys.executable, "-m", "schemathesis.cli"),
        *("--config-file", str(ROOT / "schemathesis.toml")),
        *("run", target.schema_url),
        *("--phases", "examples,coverage,fuzzing,stateful"),
        *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)),
        # Nothing carried over from an earlier run: the same cases every time.
        *("--generation-database", "none"),
        *("--workers", "1", "--no-color"),
        *("--report", "json", "--report-dir", str(report_dir)),
    ]
    return subprocess.run(
        command,
        # Its caches (.hypothesis, .schemathesis) go to the test's own folder.
        cwd=report_dir,
        env={**os.environ, "STENO_API_KEY": target.key, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_the_api_answers_as_its_openapi_document_says(target: FuzzTarget, tmp_path: Path) -> None:
    # Given a real API and its document
    # when schemathesis runs every phase and check against it
    run = st_run(target, tmp_path)

    # then nothing failed (else its report is the failure message)
    output = run.stdout + run.stderr
    if run.returncode != 0:
        pytest.fail(f"schemathesis found failures:\n{output}", pytrace=False)
    print(output)
    report: dict[str, Any] = json.loads(next(tmp_path.glob("json-*.json")).read_text())
    assert report["failures"] == [] and report["errors"] == []

    # and every phase ran, every operation was tested
    assert {name: phase["status"] for name, phase in report["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 10

    # and the job routes were reached with real jobs, the stateful phase following links
    accepted = report["valid_rates"]
    for operation in JOB_OPERATIONS:
        assert sum(rate["accepted"] for rate in accepted[operation].values()) > 0, operation
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links is not None and int(links[1]) >= 5, output


def test_revoking_a_key_answers_as_its_openapi_document_says(target: FuzzTarget) -> None:
    # Given the document, the fuzzer's admin key, a plain key, and a key to revoke
    schema = schemathesis.openapi.from_url(target.schema_url, config=SchemathesisConfig())
    revoke = schema["/v1/keys/{prefix}"]["DELETE"]
    doomed = key_prefix(make_key(target.settings, "doomed"))
    admin, plain = bearer(target.key), bearer(make_key(target.settings, "plain"))

    # when it is revoked, revoked again, then asked with a plain key and with none
    statuses = []
    for headers in (admin, admin, plain, {}):
        case = revoke.Case(path_parameters={"prefix": doomed}, headers=headers)
        response = case.call(base_url=target.base_url)

        # then each answer is one the document lists, with the body and headers it says
        case.validate_response(response)
        statuses.append(response.status_code)
    assert statuses == [204, 404, 403, 401]
