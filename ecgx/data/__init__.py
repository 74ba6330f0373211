"""The run's data: the signal cache (offline transforms applied once, memory-mapped) and the
DataModule that splits it and feeds batches through the online transforms."""
