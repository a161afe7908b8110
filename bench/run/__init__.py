"""Running the cases: the controller, the worker's training loop, round sizing, kept worker groups,
out-of-memory and interrupts, verification against ``single``, ``--plan`` and ``--find-max-batch``."""
