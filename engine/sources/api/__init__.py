"""Schemaless record sources: REST and GraphQL endpoints, and MongoDB collections.

Their records vary in fields from one to the next, so each read is spooled to a local NDJSON file first and
read back by the NDJSON source: the schema is the union of every record's fields, memory holds one page.

Owns, one concept a module: the sources (``rest``, ``graphql``, ``mongo``), what REST and GraphQL share
(``endpoint``: fetch into the spool, read it back, watermarks), their options as pydantic models
(``options``), the HTTP client of one fetch with its retries and secret scrubbing (``http``), one paginator per
style (``paginate``), JSON records (``records``: dotted paths, flattening, ISO time fields), text watermarks
(``watermark``), the spool shared by all three (``spool``) and BSON values (``_bson``, MongoDB's alone).

May import: ``engine.sources`` (base, chunks, incremental, files.json), ``engine.plan`` and the core modules
(errors, settings, retry, redact, types). Never ``engine.postgres`` or ``engine.pipeline``.
"""
