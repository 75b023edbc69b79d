"""Searches over a job's values with Ray Tune (``distgan tune JOB``); see ``search.py``."""
