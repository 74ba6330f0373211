"""Explainers: attributions, their aggregation and plots."""
