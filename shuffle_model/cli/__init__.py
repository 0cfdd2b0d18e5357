"""Command-line entry points; each module is `python -m shuffle_model.cli.<name>`:

    generate   generate text and print step statistics; show this machine's cost curve
    distill    answer prompts with the backbone into committed shards (data/distill)
    train      train a shuffle head on cached backbone features
    calibrate  fit what a draft's keep probability means, beside a head
    evaluate   compare trained heads (real generation, teacher-forced replay)
    lossless   measure the near-tie bound of verified decoding

The benchmark is its own package: `python -m shuffle_model.bench`.
"""
