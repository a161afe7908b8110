"""Which case a result is: two results with equal values in these fields measured the same thing.

bench/config/cases.py writes them into every record (and for every skipped or failed case); reports/ keys
its tables by them: the loaded outcomes, compare's matching of cases, and analyse's setups (which add
the machine and the device it ran on).
"""

CASE_IDENTITY = ("strategy", "world_size", "device_type", "preset", "precision", "per_device_batch_size", "scaling")
