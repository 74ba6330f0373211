"""Metrics, the CinC challenge score and their plots."""
