"""Every query the dashboard makes, and the tables it shows: pure functions over a read-only
``Store`` or plain records, returning pandas frames and plain values. A page only renders what
its module returns, and calls each module's ``cached_*`` entry points with a ``Source``.

- ``shared``: opening the store read-only, the ``Source`` key, the cache, value formatters;
- ``runs``: the Runs page, and naming, finding and pairing runs for every run picker;
- ``run``: the Run page (summary cards, graphs, the compile timeline, failures);
- ``graph``: the Graph page (stage tree, caches, metrics, kernels, Triton autotuning);
- ``compare``: the Compare page (two runs, graph by graph and kernel by kernel, the verdict);
- ``causes``: the causes the Compare and Run pages name first, linked to their evidence;
- ``trends``: the Trends page (compile latency percentiles and cache hit ratio per run);
- ``job``: the Job page (the ranks of one job side by side).

Tests: ``tests/dashboard/test_queries_<module>.py``, without Streamlit.
"""
