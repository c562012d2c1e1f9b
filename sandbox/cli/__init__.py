"""The ``sandbox`` command line: commands (``main``), their terminal rendering (``render``) and the demo."""
