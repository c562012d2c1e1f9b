"""The torch adapter: every touch of a private PyTorch API, and nothing else.

One module per topic, each naming the private symbols it relies on: ``seam`` (the one
replaced Inductor function), ``wire`` (a graph across the process boundary), ``caches``,
``dynamo`` (counters, compile ids, the compile lock), ``events`` (timed events and
metrics), ``warmup``, ``triton``, ``remote_cache`` and ``debug_tools`` (TORCH_TRACE,
TORCH_LOGS, TORCH_COMPILE_DEBUG, the profiler). Written against torch 2.13.0 and checked
on 2.11; ``tests/torch_adapter/`` has a test per touch point, so a torch release that
moves a symbol fails there, by name, before it fails inside a user's compile.

Each function imports the private modules it touches inside its own body: the symbol is
named where it is used, and Inductor's modules load at the first compile rather than at
``import torch`` (when the workers are pre-started) or ``import sandbox``.
"""
