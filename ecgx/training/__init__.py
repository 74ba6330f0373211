"""The LightningModule and what a training run owns: resume, cost, pre-flight checks."""
