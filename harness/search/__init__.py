"""The search: the Optuna study and its objective (``study.py``), its storage and workers, the
progress display, the re-measured front, and the stored results reports read (``results.py``,
which loads no torch)."""
