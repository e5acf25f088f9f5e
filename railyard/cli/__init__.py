"""The railyard command-line program."""


def main() -> None:
    print("railyard: the command-line program is not built yet")
