"""The robustness matrix of ``ecgx eval … robustness=<preset>`` (config group conf/robustness)."""
