"""The jobs layer: Celery workers, submitted jobs, the broker and the autoscaler."""
