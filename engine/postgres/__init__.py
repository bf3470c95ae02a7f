"""The warehouse: everything the engine says to PostgreSQL.

Owns connections and error wording (:mod:`~engine.postgres.connection`), which server
(:mod:`~engine.postgres.server`, the embedded one by default), the shape of target tables and their child
partitions (:mod:`~engine.postgres.ddl`, :mod:`~engine.postgres.periods`, :mod:`~engine.postgres.schema`),
binary COPY and merge (:mod:`~engine.postgres.copy`), new partitions filled on helper connections
(:mod:`~engine.postgres.staging`), every statement on the ``biconic`` schema (:mod:`~engine.postgres.meta`)
and pooled metadata connections (:mod:`~engine.postgres.pool`).

May import: the core modules (errors, names, types, settings, redact, handoff). Never ``engine.sources``,
``engine.archive``, ``engine.pipeline`` or ``engine.reads``.
"""
