"""What bench/ (which writes result files) and reports/ (which reads them) both need, owned by neither:
the atomic file writer and the fields that say which case a result is. Imports nothing of the project."""
