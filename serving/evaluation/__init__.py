"""Evaluation: score two models' answers on an eval set, judge them pairwise, and gate promotions.

Pure logic, one concept per module (metrics, embedding, checks, judge, stats, summary, gate); `runner`
is the thin IO layer that asks the served models over HTTP and writes progress to the store.
"""
