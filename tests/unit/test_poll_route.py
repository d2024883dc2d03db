"""The most polled route stays cheap to call.

Litestar resolves two or more dependencies of a handler in an anyio task group. On
``GET /v1/jobs/{id}`` that task group (three dependencies) took a fifth of the API's samples
under the poll benchmark and held it at 0.52-0.56x the bare reference (``tests/bench/poll.py``);
with none, 0.92-1.05x.
"""

from __future__ import annotations

from litestar.routes import HTTPRoute

from service.app import create_app


def test_the_poll_route_resolves_its_dependencies_without_a_task_group() -> None:
    # given the API
    app = create_app()
    # when its handler of GET /v1/jobs/{id} is looked up
    route = next(
        r for r in app.routes if isinstance(r, HTTPRoute) and r.path == "/v1/jobs/{job_id:str}"
    )
    handler, kwargs_model = route.route_handler_map["GET"]
    # then it is the poll handler, and no batch of its dependencies needs a task group
    assert handler.handler_name == "get_job"
    assert all(len(batch) <= 1 for batch in kwargs_model.dependency_batches)
