"""The declarative spec: what to load, where, and with which steps and rules, as typed objects.

Owns the models (:mod:`~engine.spec.models`) and reading them from YAML files or dicts; every error names
its dotted path (``steps[2].derive.total``).

May import: the core modules (errors, types). Nothing that reads data.
"""
