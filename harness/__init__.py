"""Hardware-aware NAS and benchmarking harness for efficient Vision Transformers."""

__version__ = "0.1.0"
