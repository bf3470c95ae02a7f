"""Schemaless record sources: REST and GraphQL endpoints, and MongoDB collections.

Their records vary in fields from one to the next, so each read is spooled to a local NDJSON file first and
read back by the NDJSON source: the schema is the union of every record's fields, memory holds one page.

May import: ``engine.sources`` (base, chunks, incremental, files.json), ``engine.plan`` and the core modules.
Never ``engine.postgres`` or ``engine.load``.
"""
