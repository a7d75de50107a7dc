"""``python -m harness``: the same as the ``harness`` console script."""

try:
    from harness.cli import console_main
except KeyboardInterrupt:  # Ctrl-C before the command line is even read
    raise SystemExit(130) from None

console_main()
