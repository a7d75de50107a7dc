"""Rank checks published with the harness (``harness rank-check`` records, schema 2): search reports
quote them on any machine. Written by the runs named in each record's ``command``."""
