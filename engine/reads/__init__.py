"""Reading what was loaded: SQL with DuckDB over PostgreSQL and the archive, and the cache in front of it.

Owns ad-hoc queries (:mod:`~engine.reads.duck`: one view per dataset, hot rows through DuckDB's postgres
scanner ``UNION ALL`` the cold archive files), the cache (:mod:`~engine.reads.cache`: Redis, else in process;
slower, never wrong) and what the platform shows most (:mod:`~engine.reads.catalog`: a connection's latest
rows, a dataset's metadata), and what happened to past loads (:mod:`~engine.reads.history`: the run log and
the quarantine).

May import: ``engine.postgres``, ``engine.archive`` (the store, to read archive files) and the core modules.
Never ``engine.sources`` or ``engine.pipeline``.
"""
