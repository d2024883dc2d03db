"""Operator endpoints: Prometheus metrics (``/metrics``), queue depths and ETAs (``/v1/queues``)."""
