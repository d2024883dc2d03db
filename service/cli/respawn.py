"""``python -m service.cli.respawn ARGV...``: run a process, start it again when it dies.

The batched GPU worker is one Celery process on the threads pool: unlike prefork, it has no
master to replace a child killed mid-job (an out-of-memory kill, a poison file). This keeps
it alive the way prefork keeps its children: a process killed by a signal, or one that exits
with an error, is started again (after 1 s, growing to 30 s while it keeps dying within a
minute of its start); a clean exit ends the watch. SIGTERM and SIGQUIT are passed on (a
container's PID 1 gets them alone) and end the watch once the process exits; so does SIGINT,
which is not passed on: Ctrl-C reaches the whole process group already, and a second SIGINT
would turn Celery's warm shutdown into a cold one. The killed process's jobs are not lost:
each one's lease lapses, the reaper queues it again, and a repeat attempt runs alone
(``workers.gpu.batching.gate``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["respawn"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
QUICK_DEATH_SECONDS = 60.0
MAX_DELAY_SECONDS = 30.0


def respawn(
    argv: Sequence[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Run ``argv`` until it exits cleanly or this process is told to stop; its last code."""
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        if signum != signal.SIGINT and child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, pass_on)
    delay = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(argv))
        code = child.wait()
        if stopping or code == 0:
            return code
        quick = time.monotonic() - started < QUICK_DEATH_SECONDS
        delay = min(MAX_DELAY_SECONDS, delay * 2) if quick else 1.0
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        log(f"respawn: pid {child.pid} ended by {how}; starting it again in {delay:.0f} s")
        sleep(delay)
        if stopping:
            return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m service.cli.respawn COMMAND [ARG...]")
    sys.exit(respawn(sys.argv[1:]))
