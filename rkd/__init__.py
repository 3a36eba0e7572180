"""rkd: a large vision teacher distilled into a small, channel-robust semantic transmitter (RKD-SC).

One process-wide setting is made here, before torch loads its OpenMP runtime: idle OpenMP threads
sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose otherwise. With the
default spin-waiting, a process whose threads share cores with other work (a shared node, other jobs,
several ranks per node) burns its time slices waiting, and two threads ran several times slower than
one; asleep, the second core is used whenever it is free (benchmarks/results/threads_wait_policy.json).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
