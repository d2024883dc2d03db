"""The ``steno`` command, tooling kept apart from the runtime packages (design decision 11).

commands.py     the command line: argparse and dispatch to the modules below
processes.py    each process's command line (api, worker io/gpu, beat); migrate; models install
stack.py        ``steno dev`` / ``steno demo``: the whole stack in one terminal
client.py       submit, watch and list jobs against a running API
follow.py       follow a job's progress live in a terminal (SSE, reconnecting)
sse.py          the ``text/event-stream`` line parser (the follower's and the tests')
infra/          find the configured PostgreSQL and Redis, or start private throwaway ones

Nothing under ``service/`` or ``workers/`` imports this package; it imports the runtime only
where a subcommand needs it.
"""

from service.cli.commands import main

__all__ = ["main"]
