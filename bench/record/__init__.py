"""What is written down: each case's record, its anomaly flags, the predicted memory beside the
measured, and the result file of the session."""
