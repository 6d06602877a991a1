"""Public test helpers, not part of the engine: the oracles (the original EdgeTAM code and
transformers' EdgeTamModel / EdgeTamVideoModel built at identical weights, for parity tests and
benchmarks), random-weight models in the real formats (``random_weights``), and synthetic frame
sources with ground truth (``synthetic``). Importing them needs only the engine; the oracles need
the test extra (``pip install "edgetam-kit[test]"``)."""
