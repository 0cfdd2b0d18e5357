"""The model: its config, the shuffle head, the trunks (ShuffleLM's own, or a pretrained
backbone in FasterDecodeMixer), backbone loading, and the calibration shipped with a head."""
