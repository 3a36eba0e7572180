"""Inference cost on this CPU: transmitter latency per image (batch 1 and 256) and size, vs the teacher.

The RKD-SC transmitter is what a sending device runs: input normalisation + student + CAT encoder
+ power normalisation (``rkd.export.torchscript.Transmitter``). The Deep JSCC / ADJSCC encoders and the
teacher's forward pass are timed alike. Weights come from the run when it is trained (latency does
not depend on them). Sizes: parameters and fp32 bytes; the exported TorchScript file when present.

    python benchmarks/inference.py [--config ...] [--repeats 20]      # prints JSON
"""

from __future__ import annotations

import json

import torch
from common import median_seconds, parse_config, run_teacher, trained

from rkd.measure import count_params


def size(module: torch.nn.Module) -> dict:
    params = count_params(module)
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return {"params": params, "fp32_bytes": params * 4 + buffers}


def main() -> dict:
    from rkd.baselines.deep_jscc import DeepJSCCClassifier
    from rkd.baselines.link import image_link
    from rkd.data import load_data, student_transform
    from rkd.export.torchscript import Transmitter
    from rkd.models.factory import create_stage1_model, create_stage2_model, load_stage2

    cfg, args = parse_config(__doc__, lambda p: p.add_argument("--repeats", type=int, default=20))
    torch.manual_seed(0)
    bundle = load_data(cfg.data)
    run = cfg.run_dir
    teacher = run_teacher(cfg, bundle)
    if trained(run / "stage2"):
        system = load_stage2(cfg, bundle, teacher.feature_dim, run / "stage1", run / "stage2")
    else:
        system = create_stage2_model(cfg, create_stage1_model(cfg, bundle, teacher.feature_dim))
    transform = student_transform(cfg.data, bundle)
    tx = Transmitter(system.eval(), transform).eval()
    b = cfg.baselines
    jscc = {
        name: DeepJSCCClassifier(
            image_link(cfg, bundle),
            b.jscc_channels,
            b.jscc_decoder_channels,
            b.jscc_hidden,
            adaptive=name == "adjscc",
        ).eval()
        for name in ("deep-jscc", "adjscc")
    }
    L = cfg.codec.max_symbols
    results = {}
    with torch.no_grad():
        for batch in (1, 256):
            images = bundle.splits["test"].images[:batch]
            snr, k = torch.full((batch,), 10.0), torch.full((batch,), L)
            x = transform(images)
            repeats = args.repeats if batch == 1 else max(3, args.repeats // 4)
            timings = {
                "rkd-sc transmitter": median_seconds(lambda i=images, s=snr, r=k: tx(i, s, r), repeats),
                "teacher forward": median_seconds(lambda i=images: teacher(i), repeats),
            }
            for name, model in jscc.items():
                timings[f"{name} transmitter"] = median_seconds(
                    lambda m=model, i=images, s=snr: m.transmit(transform(i), s),
                    repeats,
                )
            results[f"batch_{batch}"] = {
                name: {"seconds_per_batch": t, "ms_per_image": 1000 * t / batch} for name, t in timings.items()
            }
            del x
    tx_modules = torch.nn.ModuleList([system.student, system.encoder])
    sizes = {
        "rkd-sc transmitter (student + CAT encoder)": size(tx_modules),
        "teacher": size(teacher),
        **{f"{n} transmitter": {"params": count_params(*j.transmitter_modules())} for n, j in jscc.items()},
    }
    exported = run / "export" / "transmitter.pt"
    if exported.exists():
        sizes["rkd-sc transmitter (student + CAT encoder)"]["torchscript_file_bytes"] = exported.stat().st_size
    tx_size = sizes["rkd-sc transmitter (student + CAT encoder)"]
    return {
        "benchmark": "inference",
        "config": cfg.name,
        "threads": torch.get_num_threads(),
        "weights": "trained run" if trained(run / "stage2") else "untrained (same architecture)",
        "latency": results,
        "sizes": sizes,
        "transmitter_over_teacher_params": tx_size["params"] / sizes["teacher"]["params"],
        "transmitter_over_teacher_latency_batch_1": results["batch_1"]["rkd-sc transmitter"]["seconds_per_batch"]
        / results["batch_1"]["teacher forward"]["seconds_per_batch"],
        "transmitter_over_teacher_latency_batch_256": results["batch_256"]["rkd-sc transmitter"]["seconds_per_batch"]
        / results["batch_256"]["teacher forward"]["seconds_per_batch"],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
