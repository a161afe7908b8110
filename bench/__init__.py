"""How gpusizer runs and measures the reference model: the pytest-benchmark harness.

``pytest bench/`` collects ``bench/test_training.py``; ``bench/conftest.py`` adds the options and
writes the result file. Everything else here is the machinery those two use.
"""
