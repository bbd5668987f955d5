"""Training: ``train_base`` (the small base LM shipped as the default) and the R³Mem adapters."""
