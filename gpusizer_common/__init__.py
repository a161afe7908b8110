"""What bench/ (which writes result files) and reports/ (which reads them) both need, owned by neither:
the atomic file writer, the fields that say which case a result is, the device-type test, the
/proc/cpuinfo reader (reference_model uses that one too) and the one definition of each derived number
(metrics.py: throughput, MFU, scaling efficiency, energy per sample, cost). Imports nothing of the project."""
