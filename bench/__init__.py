"""Benchmarks of the moderation engine: one entry point (``python -m bench``), suites run alone or
all, results as versioned JSON + markdown + PNG plots, ``compare`` of two result files and
``plan`` (machines needed for a traffic mix from a measured profile).

Layout: :mod:`bench.timing` (warm-up, interleaved repetitions, quantiles), :mod:`bench.results`
(figures, the JSON schema, markdown), :mod:`bench.machine` (what the numbers ran on),
:mod:`bench.load` (how busy other work kept the CPUs), :mod:`bench.plots`, :mod:`bench.runner`
(the run command), :mod:`bench.suites` (one module per suite), :mod:`bench.compare`,
:mod:`bench.plan` with :mod:`bench.traffic`. The older scripts (``bench/preprocess.py``, ``bench/decode.py``,
``bench/gpu_bench.py``, ``bench/serving.py``) still run on their own; :mod:`bench.workload` holds the
sample items and model input batches the Session-level suites share.
"""
