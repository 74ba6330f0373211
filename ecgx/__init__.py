"""ecgx: config-driven experiments for 12-lead ECG classification and interpretation."""

__version__ = "0.1.0"
