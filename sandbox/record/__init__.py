"""The record: ``CompileReport`` and ``Run`` (``report``), the builder that is their only writer, and what it reads."""
