"""What the machine can do and what rkd chooses on it: native number formats (``capability``), the precision
of each part of a run and why (``precision``, ``decide``), a few seconds' throughput probe (``probe``),
intra-op threads per process (``threads``), and a CPU kernel that corrupts the heap, routed around
(``strided_pointwise``)."""
