"""What to run: the command-line options (one machine, multi-node, memory sizing) and the case matrix."""
