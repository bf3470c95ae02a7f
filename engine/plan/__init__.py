"""The plan: declared steps and rules turned into one Polars lazy plan per chunk. No I/O.

Owns the hidden bookkeeping columns (:mod:`~engine.plan.columns`), the :class:`~engine.plan.frame.Plan` and
its reject machinery, the steps (:mod:`~engine.plan.steps`) and the rules with the COPY guard and the final
loaded / quarantined / filtered split (:mod:`~engine.plan.rules`).

May import: ``engine.spec`` and the core modules (errors, names, types). Never a source, PostgreSQL or I/O.
"""
