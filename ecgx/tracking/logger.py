"""Lightning's MLflow logger, except that it never closes the run itself."""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning finalizes its loggers when ``fit`` ends, and its MLflow logger then marks the
    run FINISHED, before ecgx has tested the best checkpoint: a job killed in between would
    look done, with no test metrics, and resume and skip would trust it. ecgx's
    :class:`~ecgx.tracking.training_run.TrackedRun` sets the final status once everything
    promised for the run is logged."""

    def finalize(self, status: str = "success") -> None:
        if self._initialized and self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
