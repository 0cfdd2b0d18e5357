"""The benchmark (ShuffleLM beside ordinary decoding and prompt lookup) and the evaluation of
trained heads. `python -m shuffle_model.bench` runs the benchmark."""
