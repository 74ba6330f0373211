"""MLflow: the record of truth for every run, and the comparison across runs."""
