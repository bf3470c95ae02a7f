"""The job layer: imports queued on Celery (Redis or RabbitMQ broker), run by a pool of worker processes on any
number of machines, with retries, time limits, fan-out over partitions and a per-connection limit.

- :mod:`~engine.jobs.client`: ``submit`` / ``Job`` / list, cancel, retry (what the CLI and the service call);
- :mod:`~engine.jobs.app`: the Celery app and its settings; :mod:`~engine.jobs.tasks`: plan, partition, finish;
- :mod:`~engine.postgres.meta_jobs`: the durable job history in PostgreSQL; :mod:`~engine.jobs.fairness`: the
  per-connection limit; :mod:`~engine.jobs.broker`: where the broker is (an embedded Redis by default);
- :mod:`~engine.jobs.sweeps`: the maintenance beat runs (tiering, upload tiering, sweeps of what killed loads
  left) and the lock that keeps one beat per deployment.

May import: the pipeline and every layer below it. Only the CLI and the service import this.
"""
