"""Benchmark suite: every hot path timed next to its physical baseline, in one run.

`python -m bench` (full scale) or `python -m bench --quick` (seconds-long smoke run).
Each scenario generates its own data in a temp dir, measures our implementation and a
baseline on the same files in the same run, and reports the ratio against its target.
"""
