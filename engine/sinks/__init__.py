"""Sinks: where loaded rows land. PostgreSQL is the warehouse."""
