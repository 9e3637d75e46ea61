"""``python -m naslung``: the same as the ``naslung`` command."""

from naslung.cli.app import main

if __name__ == "__main__":
    main()
