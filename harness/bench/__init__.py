"""Benchmarks of the harness's own speed on a device: suites of configurations (``suites.py``,
``harness bench``), the knob benchmark (``knob_bench.py``), base-vs-head comparisons
(``compare.py`` with ``compare_stats.py``, ``revisions.py``) and the history over commits."""
