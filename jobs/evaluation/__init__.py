"""Offline evaluation: the hold-out split, baselines, ranking and beyond-accuracy metrics, targeting lift,
and the report."""
