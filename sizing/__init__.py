"""Memory sizing: will a training step fit a device, at what batch, with which strategy.

Neutral ground between bench/ (which records predicted beside measured peaks) and reports/ (which
shows them and answers `gpusizer fit`): imports reference_model (and the leaf gpusizer_common) only, never bench/ or reports/.
"""
