"""``python -m availability``: the same as the ``availability`` command."""

from availability.cli import main

if __name__ == "__main__":  # spawned worker processes import this module too
    main()
