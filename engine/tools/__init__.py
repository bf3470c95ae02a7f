"""Developer tools that read the engine's own source (never imported by the engine itself)."""
