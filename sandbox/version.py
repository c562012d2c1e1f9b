"""The sandbox's version: one place, read by the package metadata, the Run record and the metrics."""

__version__ = "0.1.0"
