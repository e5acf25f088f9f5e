"""`python -m railyard ...` runs the railyard command-line program."""

from railyard.cli import main

if __name__ == "__main__":
    main()
