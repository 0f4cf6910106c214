"""``python -m condlab`` and the ``condlab`` script.

The command line is imported inside :func:`main`, so a Ctrl-C while it loads is one line and
exit 130 like a Ctrl-C anywhere later, not a traceback.
"""

import sys


def main() -> None:
    try:
        from condlab.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (Ctrl-C)\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
