"""``split=``: how records become train/val/test."""
