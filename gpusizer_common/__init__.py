"""What bench/ (which writes result files) and reports/ (which reads them) both need, owned by neither:
the atomic file writer, the fields that say which case a result is, the device-type test and the
/proc/cpuinfo reader (reference_model uses that one too). Imports nothing of the project."""
