"""The benchmark: RKD-SC against its baselines, controls and ablations, as resumable (method, seed) cells.

``make bench`` (``benchmarks/bench.py``) runs it on ``rkd/configs/default.yaml`` as shipped:

* one teacher (``runs/bench/teacher``), trained once with the base seed and shared by every seed
  (``teacher.seed`` pinned), its cost counted once in the budget table;
* per training seed and RKD-SC learning-rate multiplier, an RKD-SC run (``runs/bench/rkd/seed-<s>-x<m>``)
  whose teacher and cache are links to the shared ones;
* per (method, seed, multiplier) a cell (``runs/bench/cells/<method>/seed-<s>-x<m>``): its results,
  and ``cell.json`` with the teacher's content hash, the machine and the precision it ran with;
* the tuning grid (``rkd.bench.tuning``): every tuned method trained at each multiplier of its
  learning rates on the first seed, the best val accuracy chosen, every seed run at that choice;
* the comparison (``runs/bench/view``): the chosen cells gathered into the layout
  ``rkd.evaluation.compare`` reads, refused when cells were made with different teachers.

Modules: ``catalogue`` (the methods and what each answers), ``layout`` (cells, configs, paths),
``plan`` (the cells and their order), ``costs`` (the cost model), ``machine``, ``records``,
``tuning``, ``cell`` (one cell in this process), ``scheduler`` (cells in worker processes).
"""
