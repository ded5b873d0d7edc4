"""``python -m availability.cli``: the same as the ``availability`` command."""

from availability.cli import main

if __name__ == "__main__":
    main()
