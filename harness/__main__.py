"""``python -m harness`` and the ``harness`` console script: the command line, started with
huge-page-backed malloc (``harness.hugepages``) before anything heavy is imported."""

import sys

from harness.errors import ConfigError
from harness.hugepages import restart_with_hugepages


def run() -> None:
    try:
        restart_with_hugepages()
        from harness.cli import console_main
    except ConfigError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before the command line is even read
        raise SystemExit(130) from None
    console_main()


if __name__ == "__main__":
    run()
