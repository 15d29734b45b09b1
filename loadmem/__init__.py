"""loadmem: load test an HTTP service while recording where its memory goes."""

__version__ = "0.1.0"
