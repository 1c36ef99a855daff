"""Latency benchmarks as data: jobs, targets (phones over adb, this machine), typed results.

``options``: what a run is asked to do, bounded once. ``jobs``: the networks and their
fixed input. ``results``: the results file as dataclasses (one format, a JSON round
trip). ``target``: the one interface both targets implement; ``adb_target`` and
``host`` implement it (``litert``: the host's LiteRT backend, for TFLite sources).
``run``: the one call ``bench`` makes. ``report``: Table 2 and a chart from results
files.
"""
