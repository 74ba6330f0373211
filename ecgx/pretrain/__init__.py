"""Self-supervised pretraining (``pretrain=`` config group): objectives, views, the module."""
