"""The batched GPU worker's admission gate: repeat attempts run alone, first attempts together."""

from __future__ import annotations

import threading
import time

from workers.gpu.batching.gate import SoloGate


def _hold(gate: SoloGate, name: str, alone: bool, log: list[str], release: threading.Event) -> None:
    with gate.admitted(alone=alone):
        log.append(f"+{name}")
        release.wait(5)
        log.append(f"-{name}")


def _start(*args: object) -> threading.Thread:
    thread = threading.Thread(target=_hold, args=args, daemon=True)
    thread.start()
    return thread


def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_first_attempts_share_and_a_repeat_attempt_waits_for_them_then_runs_alone() -> None:
    # given two first attempts running together
    gate, log = SoloGate(), []
    first, second, solo, late = (threading.Event() for _ in range(4))
    a = _start(gate, "a", False, log, first)
    b = _start(gate, "b", False, log, second)
    _until(lambda: {"+a", "+b"} <= set(log))

    # when a repeat attempt arrives, then another first attempt after it
    s = _start(gate, "solo", True, log, solo)
    time.sleep(0.1)
    c = _start(gate, "c", False, log, late)
    time.sleep(0.1)

    # then neither starts while a and b run (the repeat attempt goes first)
    assert "+solo" not in log and "+c" not in log
    first.set()
    second.set()
    _until(lambda: "+solo" in log)
    # and the repeat attempt runs alone: c waits until it is done
    time.sleep(0.1)
    assert "+c" not in log
    solo.set()
    late.set()
    for thread in (a, b, s, c):
        thread.join(5)
    assert log.index("-solo") < log.index("+c")
    assert log.index("-a") < log.index("+solo") and log.index("-b") < log.index("+solo")
