"""``python -m engine`` is the ``biconic`` CLI."""

from engine.cli import main

if __name__ == "__main__":
    main()
