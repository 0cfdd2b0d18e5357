"""Training the head: self-distilled data (prompt sources, distillation, committed shards),
cached backbone features, the set-prediction loss, the training loop and calibration."""
