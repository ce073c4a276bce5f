"""The two streaming engines and what they share.

* :mod:`~wordstream.engines.structured` and :mod:`~wordstream.engines.dstream` — one module per
  engine, each with the same four parts: pipeline, sink, progress, stop;
* :mod:`~wordstream.engines.driver` — the life of a driver around either (lock, stop loop, status);
* :mod:`~wordstream.engines.app_args` — the applications' command line;
* :mod:`~wordstream.engines.keys` — what a key is (words or lines);
* :mod:`~wordstream.engines.spark_probes` — every use of Spark's internals.
"""
