"""Job progress as events: a bounded Redis Stream per job, milestones in PostgreSQL, SSE."""
