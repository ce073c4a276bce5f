"""wordstream's benchmarks: ``python -m bench`` (``make bench``).

Each module measures one thing the project promises (throughput, latency, staging speed, parse
time, state size, start-up, what grows over a soak) against a baseline taken in the same run, so
that the ratios hold on whatever machine runs them. See ``bench/__main__.py`` for the options and
``bench/results/latest.md`` for the last figures.
"""
