"""The names an arq program imports from ``workers.arq.worker``, and the names results carry."""

from __future__ import annotations

import pytest

import workers.arq
import workers.arq.worker
from workers.arq.jobs import decode_exception, encode_exception

ARQ_WORKER_NAMES = (
    "Function",
    "Retry",
    "RetryJob",
    "Worker",
    "async_check_health",
    "check_health",
    "create_worker",
    "func",
    "get_kwargs",
    "run_worker",
)


@pytest.mark.parametrize("name", ARQ_WORKER_NAMES)
def test_arq_worker_names_import_from_workers_arq_worker(name: str) -> None:
    assert name in workers.arq.worker.__all__
    assert getattr(workers.arq.worker, name) is not None


def test_the_package_hands_out_the_same_worker_types() -> None:
    assert workers.arq.Retry is workers.arq.worker.Retry
    assert workers.arq.Worker is workers.arq.worker.Worker
    assert workers.arq.func is workers.arq.worker.func


@pytest.mark.parametrize("cls", [workers.arq.worker.Retry, workers.arq.worker.RetryJob])
def test_a_kept_retry_exception_is_stored_under_its_public_path(cls: type[Exception]) -> None:
    # given a job that raised Retry (or RetryJob) with retry_jobs off, so it is the result
    stored = encode_exception(cls())

    # when its result is written and read back
    decoded = decode_exception(stored)

    # then it carries the path results have always carried, and comes back as that class
    assert stored["type"] == f"workers.arq.worker.{cls.__qualname__}"
    assert type(decoded) is cls
