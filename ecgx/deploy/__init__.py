"""A finished run as something anyone can load, serve, register and export.

:mod:`ecgx.deploy.contract` says what a run's model takes and returns, :mod:`ecgx.deploy.pyfunc`
is the MLflow pyfunc model built on :class:`ecgx.commands.predict.RunPipeline` (the same
preprocessing as ``ecgx predict``), :mod:`ecgx.deploy.registry` the model registry, and
:mod:`ecgx.deploy.export` TorchScript and ONNX files.
"""
