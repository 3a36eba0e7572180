"""The check to run on the first machine with an accelerator: the paper's shapes through every stage under
`accelerate launch`, asserting that every model and batch tensor lives on the device (no silent CPU fallback),
with img/s per stage, peak device memory and the precision used, in at most about 8 minutes.

    python benchmarks/device_check.py --out benchmarks/results/device_check_<gpu>.json     # all visible GPUs, bf16
    python benchmarks/device_check.py --tiny --out /tmp/device_check.json                 # 2 CPU processes, tiny shapes

The paper form: a ViT-B/16 teacher (random init, 224 px) fine-tuned in bf16 for a few steps, the teacher cache
over CIFAR-100-shaped data (its throughput), a search step, stage-1 and stage-2 steps with the paper config's
student and codec, one evaluation cell (AWGN, 10 dB, k = 128). The tiny form runs the same code on 2 CPU
processes (tests/test_device_check.py keeps it from rotting). During every training step, teacher pass and
evaluation sweep a forward pre-hook on every module checks that the module's inputs and parameters are on the
accelerator; any tensor elsewhere fails the check, naming the stage and the module. Exit status 0 = passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import write_json
from paper_shapes import STAGES, VIT_B16, VIT_TINY, make_data, make_teacher, overrides, peak_rss_gib, reset_peak_rss

REPO = Path(__file__).resolve().parents[1]

PAPER = {"n_train": 4096, "n_test": 1024, "vit": VIT_B16, "steps": 30, "batch": 32, "precision": "bf16"}
TINY = {"n_train": 120, "n_test": 40, "vit": VIT_TINY, "steps": 2, "batch": 4, "precision": "no"}


def tensors_in(value) -> list:
    """Every tensor in a (nested) batch, argument tuple or dict."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


class DeviceProbe:
    """Wraps the pipeline's stages and hot loops: times them, counts images, and checks tensor devices."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.device_type = accelerator.device.type
        self.stage = "start"
        self.stats: dict = {}
        self.violations: list = []
        self.checked = 0

    def _check(self, what: str, tensors: list) -> None:
        self.checked += len(tensors)
        for t in tensors:
            if t.device.type != self.device_type and t.numel() > 1:
                self.violations.append(f"{self.stage}: {what} has a {tuple(t.shape)} tensor on {t.device}")

    def _hook(self, module, args):
        self._check(f"{type(module).__name__} input", tensors_in(args))
        self._check(f"{type(module).__name__} parameter", list(module.parameters(recurse=False)))

    def timed(self, kind: str, fn, images, *args, **kwargs):
        """``fn(*args, **kwargs)`` with the device hook on, its time and ``images`` counted under this stage."""
        import torch

        handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        if self.device_type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if self.device_type == "cuda":
                torch.cuda.synchronize()
            handle.remove()
            entry = self.stats.setdefault(self.stage, {"kind": kind, "calls": 0, "images": 0, "seconds": 0.0})
            entry["calls"] += 1
            entry["images"] += int(images)
            entry["seconds"] += time.perf_counter() - started
            if entry["calls"] == 1:
                entry["first_call_seconds"] = entry["seconds"]

    def stage_function(self, name: str, fn):
        def run(cfg, accelerator, inputs, out_dir):
            import torch

            self.stage = name
            if self.device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            reset_peak_rss()
            try:
                return fn(cfg, accelerator, inputs, out_dir)
            finally:
                entry = self.stats.setdefault(name, {})
                entry["peak_host_memory_gib"] = round(peak_rss_gib(), 3)
                if self.device_type == "cuda":
                    entry["peak_device_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)

        return run

    def install(self) -> None:
        """Wrap the engine's step, the cache's teacher pass, the evaluation sweep and every stage function."""
        import rkd.engine as engine
        import rkd.run.pipeline as pipeline
        import rkd.stages.evaluate as evaluate
        import rkd.teacher.cache_build as cache_build

        step, teacher_pass, sweep = engine.train_step, cache_build._teacher_pass, evaluate.channel_sweep

        def train_step(accelerator, model, objective, batch, *args, **kwargs):
            self._check("the batch", tensors_in(batch))
            self._check("the model", list(accelerator.unwrap_model(model).parameters()))
            return self.timed("train", step, len(batch["label"]), accelerator, model, objective, batch, *args, **kwargs)

        def cache_pass(teacher, images, *args, **kwargs):
            return self.timed("inference", teacher_pass, images.shape[0], teacher, images, *args, **kwargs)

        def channel_sweep(system, tokens, labels, channels, snrs, rates, *args, **kwargs):
            cells = len(channels) * len(snrs) * len(rates)
            call = (system, tokens, labels, channels, snrs, rates, *args)
            return self.timed("evaluation", sweep, cells * tokens.shape[0], *call, **kwargs)

        engine.train_step, cache_build._teacher_pass, evaluate.channel_sweep = train_step, cache_pass, channel_sweep
        for name, fn in list(pipeline.STAGE_FUNCTIONS.items()):
            pipeline.STAGE_FUNCTIONS[name] = self.stage_function(name, fn)

    def report(self) -> dict:
        stages = {}
        for name, entry in self.stats.items():
            rest = entry.get("seconds", 0.0) - entry.get("first_call_seconds", 0.0)
            calls, images = entry.get("calls", 0), entry.get("images", 0)
            per_call = images / calls if calls else 0
            steady = per_call * (calls - 1) / rest if calls > 1 and rest > 0 else None
            stages[name] = {**entry, "img_per_s": round(images / entry["seconds"], 1) if entry.get("seconds") else None}
            stages[name]["img_per_s_after_first"] = round(steady, 1) if steady else None
        return {"stages": stages, "tensors_checked": self.checked, "violations": self.violations[:50]}


def worker(plan_path: Path) -> int:
    """One process of the launched check: the pipeline with the probe installed; writes rank<r>.json."""
    from rkd.bench.machine import machine_record
    from rkd.config import load_config
    from rkd.engine import make_accelerator
    from rkd.run.pipeline import Pipeline

    plan = json.loads(plan_path.read_text())
    cfg = load_config(["paper-cifar100-vit"], plan["overrides"])
    accelerator = make_accelerator(cfg.mixed_precision, seed=cfg.seed)
    probe = DeviceProbe(accelerator)
    probe.install()
    Pipeline(cfg, accelerator).run(until="eval")
    record = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "device": str(accelerator.device),
        "precision": {"mixed_precision": str(accelerator.mixed_precision), "teacher": cfg.teacher.train_precision},
        "machine": machine_record(),
        **probe.report(),
    }
    Path(plan["out_dir"], f"rank{accelerator.process_index}.json").write_text(json.dumps(record, indent=2))
    accelerator.wait_for_everyone()
    return 0


def launch(args: argparse.Namespace) -> dict:
    """Prepare the data and teacher, run the workers under `accelerate launch`, merge what they wrote."""
    shape = TINY if args.tiny else PAPER
    work = args.work
    data = make_data(work / "data", shape["n_train"], shape["n_test"])
    teacher = make_teacher(work / "teacher", shape["vit"])
    out_dir = work / f"ranks-{int(time.time())}"
    out_dir.mkdir(parents=True)
    steps, batch, precision = shape["steps"], shape["batch"], shape["precision"]
    extra = [
        f"runs_dir={out_dir / 'runs'}",
        "name=device-check",
        f"teacher.train_precision={'bf16' if precision == 'bf16' else 'fp32'}",
    ]
    plan = {"overrides": [*overrides(data, teacher, steps, batch, precision), *extra], "out_dir": str(out_dir)}
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    cpu = args.tiny or not _cuda_count()
    nproc = args.nproc or (2 if cpu else _cuda_count())
    config = "launch_configs/cpu_2proc.yaml" if cpu else "launch_configs/gpu_multi.yaml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / config)]
    cmd += [
        "--num_processes",
        str(nproc),
        "--main_process_port",
        str(args.port),
        __file__,
        "--worker",
        str(out_dir / "plan.json"),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    try:
        code = proc.wait(timeout=args.time_limit)
    except subprocess.TimeoutExpired:
        # SIGTERM: the launcher passes it on to its ranks (each in a session of its own, out of reach of a
        # kill of the launcher alone) and waits for them; the ranks that finished still report below
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        code = None
    ranks = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]
    return {
        "what": "device check: " + ("tiny shapes, 2 CPU processes" if args.tiny else "paper shapes"),
        "launch": {"config": config, "processes": nproc, "exit_code": code, "timed_out": code is None},
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summarise(ranks),
        "ranks": ranks,
        "passed": code == 0 and len(ranks) == nproc and not any(r["violations"] for r in ranks),
        "stages_expected": list(STAGES),
    }


def summarise(ranks: list) -> dict:
    """Per stage: images per second over all ranks (after each rank's first call when there were several),
    the largest peak device memory, and the precision."""
    out: dict = {}
    for rank in ranks:
        for stage, entry in rank["stages"].items():
            into = out.setdefault(stage, {"img_per_s_all_ranks": 0.0, "peak_device_memory_gib": None})
            rate = entry.get("img_per_s_after_first") or entry.get("img_per_s") or 0.0
            into["img_per_s_all_ranks"] = round(into["img_per_s_all_ranks"] + rate, 1)
            peak = entry.get("peak_device_memory_gib")
            if peak is not None:
                into["peak_device_memory_gib"] = max(peak, into["peak_device_memory_gib"] or 0.0)
    precision = ranks[0]["precision"] if ranks else None
    return {"precision": precision, "device": ranks[0]["device"] if ranks else None, "stages": out}


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on 2 CPU processes (the test suite's form)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rkd-device-check"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--nproc", type=int, default=None, help="processes (default: every GPU; 2 on CPU)")
    parser.add_argument("--port", type=int, default=29571)
    parser.add_argument("--time-limit", type=int, default=480, help="seconds for the launched run")
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    result = launch(args)
    write_json(result, args.out)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
