"""A job's states and the transitions between them; every transition is in ``transitions``
(the re-run, the one way out of a final state, is in ``rerun``).

Every transition is one conditional UPDATE, so two processes racing on a job can never both
win. A worker's claim bumps ``attempts``; that number is the fencing token every later write
of that worker must present, and it never goes down (a re-run keeps it). The diagram, then
each arrow's function::

                  ┌──── release_claim, reap (lease lapsed) ────┐
                  ▼                                            │
    create_job ─▶ queued ──────────── claim_job ──────────▶ running ──complete_job─▶ completed
                  │ ▲                                          │
                  │ └────── rerun_job ◀── failed, cancelled    │
                  │                                            │
                  ├─ fail_fetch, claim_job at cap ─▶ failed ◀─ fail_job, reap at cap
                  │                                            │
                  └──────────── cancel_job ──▶ cancelled ◀──── cancel_job

    from      to         by
    (none)    queued     create_job
    queued    running    claim_job (attempts + 1: the new fencing token)
    running   running    claim_job once the lease ran out (a new attempt)
    running   completed  complete_job (the transcript in the same transaction)
    running   failed     fail_job; reap_expired_leases (redrive) at the attempt cap
    running   queued     release_claim (the worker, not the job, is at fault);
                         reap_expired_leases (redrive; the lease ran out, under the cap)
    queued    failed     fail_fetch (the audio_url could not be read); claim_job at the cap
    queued    cancelled  cancel_job
    running   cancelled  cancel_job (the worker's next fenced write matches no row)
    failed    queued     rerun_job (an operator's re-run: attempts kept, the cap counts
    cancelled queued     claims since it; refused for an upload whose audio retention removed)

``completed``, ``failed`` and ``cancelled`` are final: no worker moves a job out of them, only
the owner's ``rerun_job`` (from ``failed`` or ``cancelled``); retention deletes only final
jobs, or their audio (``retention``).
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """A job's state; ``completed``, ``failed`` and ``cancelled`` are final."""

    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (JobStatus.queued, JobStatus.running)
FINAL = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})

# error.code of a job retried because its worker stopped renewing the lease (died, hung).
WORKER_LOST = "worker_lost"
