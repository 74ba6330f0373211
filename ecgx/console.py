"""What a command prints: each line once, the libraries' adverts and their own deprecations
left out, the warnings that concern the user kept (and written to the run's log file)."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning's lines that say nothing about this run: the device lines are replaced by ecgx's
# plan line (which names the device), the rest are adverts or notes about its own defaults.
NOISE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "💡 Tip:",
    "Trainer already configured with model summary",
)
# Deprecations inside these libraries are for their developers, not for someone training a
# model: they cannot act on them.
LIBRARIES = r"(lightning|torch|torchmetrics|mlflow|captum|hydra|omegaconf|pydantic|sklearn|pandas)"


class ConsoleFormatter(logging.Formatter):
    """The message alone at INFO; ``warning: …`` / ``error: …`` above it (the file handler
    keeps time, logger and level on every line)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(NOISE)


def quiet_before_imports() -> None:
    """Before MLflow is imported: its INFO lines (creating a store's tables, migrations) are
    set-up chatter; its warnings still show."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)


def configure() -> None:
    """Inside a Hydra job, after Hydra has set up the console and file handlers on the root
    logger: every line goes through those once."""
    import lightning  # noqa: F401 - its package logger has its own console handler

    # Lightning's top-level logger prints every lightning.* record itself and then passes it
    # on to the root logger, which prints it again (and writes it to the run's log file).
    logging.getLogger("lightning").handlers.clear()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DropNoise) for f in handler.filters):
            handler.addFilter(DropNoise())
    # Python warnings (Lightning's rank_zero_warn among them) as log records: one format, and
    # kept in the run's log file.
    logging.captureWarnings(True)
    quiet_before_imports()
