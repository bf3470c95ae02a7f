"""The HTTP service the platform calls (``biconic serve``): FastAPI on uvicorn, as thin as the CLI.

Each endpoint is one call of the engine's API or of the jobs layer; what is added here is only what HTTP needs:

- :mod:`engine.service.app`: the application (routers, limits, the root path behind a proxy).
- :mod:`engine.service.problems`: every error as RFC 9457 ``application/problem+json``, one line, no trace.
- :mod:`engine.service.tokens` and :mod:`engine.service.auth`: bearer tokens stored hashed; a token belongs to
  one connection (or is admin), and the server, never the request, decides which connection a call touches.
- :mod:`engine.service.uploads`: tus 1.0 resumable uploads, streamed to the uploads folder.
- :mod:`engine.service.imports`: imports of uploads as jobs, their progress as Server-Sent Events, quarantine.
- :mod:`engine.service.datasets`: dataset metadata, latest rows and structured queries.
"""
