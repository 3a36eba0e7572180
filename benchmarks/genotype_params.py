"""What counting a drawn genotype's parameters costs: building its Student vs summing measured op costs, as JSON.

The search's candidate selection and the random-cells control draw genotypes until enough fit under a
size cap (up to ``DRAWS_PER_CANDIDATE`` per slot): each draw is counted. This times both ways of
counting the same draws (uniform architecture weights, the config's student shape) and checks they agree.

    python benchmarks/genotype_params.py [--draws 200] [--threads 1] [--out results/genotype_params.json]
"""

from __future__ import annotations

import time

import torch
from common import parse_config, write_json

from rkd.bench.machine import machine_record
from rkd.measure import count_params
from rkd.nas.complexity import NetworkShape, network_params
from rkd.nas.derive import ArchWeights, num_edges, sample_genotype
from rkd.nas.ops import PRIMITIVES


def main() -> None:
    cfg, args = parse_config(
        __doc__.splitlines()[0],
        lambda p: (p.add_argument("--draws", type=int, default=200), p.add_argument("--out", default=None)),
        default_configs=("default",),
    )
    st = cfg.student
    shape = NetworkShape(1, 10, cfg.data.image_size, st.init_channels, st.layers, st.stem_stride)
    nodes, generator = cfg.search.nodes, torch.Generator().manual_seed(0)
    uniform = torch.ones(num_edges(nodes), len(PRIMITIVES))
    draws = [
        sample_genotype(ArchWeights(uniform, uniform), PRIMITIVES, nodes, cfg.search.max_skips, generator)
        for _ in range(args.draws)
    ]
    started = time.perf_counter()
    built = [count_params(shape.build(g)) for g in draws]
    built_seconds = time.perf_counter() - started
    started = time.perf_counter()
    network_params(draws[0], shape)  # measures the shape's fixed parts and its ops once
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    summed = [network_params(g, shape) for g in draws]
    summed_seconds = time.perf_counter() - started
    result = {
        "machine": machine_record(args.threads),
        "shape": vars(shape),
        "draws": args.draws,
        "same_counts": built == summed,
        "built_ms_per_draw": round(1e3 * built_seconds / args.draws, 3),
        "summed_first_call_s": round(first_seconds, 3),
        "summed_ms_per_draw": round(1e3 * summed_seconds / args.draws, 3),
    }
    write_json(result, args.out)


if __name__ == "__main__":
    main()
