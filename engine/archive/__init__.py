"""The archive: the cold copy of every load, as Parquet + ZSTD on a local folder or S3, and the tiering policy.

Owns where files live (:mod:`~engine.archive.store`: upload to a temporary key, verify, rename), writing a
load's copy while its rows stream to PostgreSQL (:mod:`~engine.archive.writer`), moving old partitions out
of PostgreSQL and back (:mod:`~engine.archive.tiering`, :mod:`~engine.archive.restore`) and the lifecycle of
raw uploads (:mod:`~engine.archive.uploads`). The manifest's SQL lives with the rest of the ``biconic``
schema in :mod:`engine.postgres.meta`.

May import: ``engine.postgres`` and the core modules. Never ``engine.sources``, ``engine.pipeline`` or
``engine.reads``.
"""
