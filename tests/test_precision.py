"""Precision chosen from the hardware (rkd.hardware): capability, the choice and its reason, DeepSpeed pairings,
and the parts of a run that must compute in a precision of their own (the teacher, the DARTS architect)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rkd.hardware import capability as capability_module
from rkd.hardware import decide
from rkd.hardware.capability import Capability, cpu_capability
from rkd.hardware.precision import (
    PrecisionError,
    choose,
    computing_in,
    deepspeed_precision,
    under_deepspeed,
    warn_once,
)

REPO = Path(__file__).resolve().parents[1]
ZEN4 = {"aten_isa": "AVX512", "amx": False, "avx512_bf16": True, "onednn_bf16": True}
SAPPHIRE = {"aten_isa": "AVX512", "amx": True, "avx512_bf16": True, "onednn_bf16": True}
ZEN1 = {"aten_isa": "AVX2", "amx": False, "avx512_bf16": False, "onednn_bf16": False}
NATIVE = Capability("cpu", "test CPU", True, False, "CPU has AVX512-BF16")
EMULATED = Capability("cpu", "test CPU", False, False, "this CPU has no native bf16")


@pytest.fixture(autouse=True)
def no_isa_limits(monkeypatch):
    for variable in (
        "ONEDNN_MAX_CPU_ISA",
        "DNNL_MAX_CPU_ISA",
        "ACCELERATE_USE_DEEPSPEED",
        "ACCELERATE_MIXED_PRECISION",
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize(
    "flags, native, why",
    [
        (SAPPHIRE, True, "CPU has AMX"),
        (ZEN4, True, "CPU has AVX512-BF16"),
        (ZEN1, False, "this CPU has no native bf16"),
        ({**ZEN4, "onednn_bf16": False}, False, "oneDNN will not use bf16"),
    ],
)
def test_cpu_capability_from_flags(flags, native, why):
    cap = cpu_capability(lambda: flags)
    assert cap.bf16 is native and why in cap.why and cap.fp16 is False


@pytest.mark.parametrize("limit, native", [("AVX2", False), ("AVX512_CORE", False), ("AVX512_CORE_BF16", True)])
def test_a_onednn_isa_limit_below_the_cpu_turns_native_bf16_off(monkeypatch, limit, native):
    """cpuid still reports AVX512-BF16 under the limit; oneDNN would emulate bf16 (AVX512_CORE: it still says yes)."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    cap = cpu_capability(lambda: ZEN4)
    assert cap.bf16 is native
    if not native:
        assert f"ONEDNN_MAX_CPU_ISA={limit}" in cap.why


def test_unreadable_capability_means_fp32_with_that_reason():
    def broken():
        raise RuntimeError("no cpuinfo")

    cap = cpu_capability(broken)
    assert cap.bf16 is None and "unreadable" in cap.why
    chosen = choose("teacher.train_precision", "auto", cap)
    assert chosen.name == "fp32" and "unreadable" in chosen.reason and "no cpuinfo" in chosen.reason


def test_auto_takes_native_bf16_and_says_why():
    chosen = choose("teacher.train_precision", "auto", NATIVE, bf16_speed=1.9)
    assert (chosen.name, str(chosen)) == ("bf16", "bf16: auto: CPU has AVX512-BF16") and chosen.warning is None
    assert choose("teacher.train_precision", "auto", NATIVE).name == "bf16"  # not measured: the capability decides
    plain = choose("teacher.train_precision", "auto", EMULATED)
    assert str(plain) == "fp32: auto: this CPU has no native bf16" and plain.warning is None


def test_auto_keeps_fp32_where_native_bf16_measured_slower_or_barely_faster():
    chosen = choose("mixed_precision", "auto", NATIVE, bf16_speed=0.8, work="the student's small layers")
    assert chosen.name == "fp32"
    assert "measured 0.80x fp32's speed for the student's small layers" in chosen.reason
    assert choose("mixed_precision", "auto", NATIVE, bf16_speed=1.1).name == "fp32"  # noise must not flip it
    assert choose("mixed_precision", "auto", NATIVE, bf16_speed=1.3).name == "bf16"


def test_explicit_bf16_without_native_runs_and_warns_once_with_the_factor():
    chosen = choose("teacher.train_precision", "bf16", EMULATED, bf16_speed=0.05)
    assert chosen.name == "bf16" and "emulated" in chosen.reason
    assert "20.0x slower than fp32" in chosen.warning and "teacher.train_precision=auto" in chosen.warning
    said: list = []
    warn_once(chosen, said.append)
    warn_once(choose("teacher.train_precision", "bf16", EMULATED, bf16_speed=0.05), said.append)
    assert len(said) == 1 and said[0].startswith("[rkd] warning: teacher.train_precision = bf16")
    assert choose("teacher.train_precision", "bf16", NATIVE).warning is None


def test_a_precision_the_device_cannot_run_is_one_line_naming_field_and_choices():
    with pytest.raises(PrecisionError) as err:
        choose("mixed_precision", "fp16", EMULATED)
    message = str(err.value)
    assert "\n" not in message and "'mixed_precision' = 'fp16'" in message
    assert "auto, no, fp32, bf16" in message
    gpu = Capability("cuda", "test GPU", False, True, "GPU test GPU has no native bf16")
    assert choose("mixed_precision", "fp16", gpu).name == "fp16"
    assert choose("mixed_precision", "auto", gpu).name == "fp32"  # fp16 only where asked


def test_the_decision_reads_the_capability_and_the_probe(monkeypatch):
    """Mocked both ways: a native-bf16 CPU (teacher bf16, student fp32 where measured slower) and an AVX2 one."""
    monkeypatch.setattr(decide, "capability", lambda device_type: NATIVE)
    monkeypatch.setattr(decide, "probe", lambda device_type: {"bf16_speed": {"conv": 1.9, "student": 0.85}})
    assert decide.teacher_precision("auto", "cpu").name == "bf16"
    assert decide.student_precision("auto", "cpu").name == "fp32"
    monkeypatch.setattr(decide, "capability", lambda device_type: EMULATED)
    monkeypatch.setattr(decide, "probe", lambda device_type: pytest.fail("no probe is needed without native bf16"))
    assert decide.teacher_precision("auto", "cpu").name == "fp32"
    assert decide.student_precision("auto", "cpu").name == "fp32"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    launched = decide.student_precision("auto", "cpu")
    assert launched.name == "bf16" and "launcher" in launched.reason and launched.warning


def test_the_real_capability_of_this_machine_is_readable():
    cap = capability_module.capability("cpu")
    assert cap.bf16 in (True, False) and cap.device == "cpu" and cap.why


# ----------------------------------------------------------------------------- DeepSpeed


def test_deepspeed_jsons_say_what_they_compute_in():
    assert deepspeed_precision(REPO / "launch_configs" / "deepspeed_zero2.json") == "fp32"
    assert deepspeed_precision(REPO / "launch_configs" / "deepspeed_zero2_bf16.json") == "bf16"
    assert deepspeed_precision({"bf16": {"enabled": True}}) == "weights-bf16"


def test_under_deepspeed_auto_follows_the_json_and_a_contradiction_names_a_working_pairing():
    bf16_json = "launch_configs/deepspeed_zero2_bf16.json"
    assert str(under_deepspeed("mixed_precision", "auto", "bf16", bf16_json)).startswith("bf16: auto: the DeepSpeed")
    assert under_deepspeed("mixed_precision", "bf16", "bf16", bf16_json).name == "bf16"  # the paper configs' pairing
    assert under_deepspeed("teacher.train_precision", "auto", "fp32", "x.json").name == "fp32"
    with pytest.raises(PrecisionError) as err:
        under_deepspeed("mixed_precision", "bf16", "fp32", "launch_configs/deepspeed_zero2.json")
    message = str(err.value)
    assert "\n" not in message and "'mixed_precision' = 'bf16'" in message and "deepspeed_zero2.json" in message
    assert "launch_configs/deepspeed_zero2_bf16.yaml with mixed_precision=bf16" in message


def test_make_accelerator_refuses_bf16_against_an_fp32_deepspeed_json_before_starting(monkeypatch):
    from rkd.engine import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO / "launch_configs" / "deepspeed_zero2.json"))
    with pytest.raises(PrecisionError, match="deepspeed_zero2_bf16.yaml"):
        make_accelerator("bf16")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO / "launch_configs" / "deepspeed_zero2_bf16.json"))
    assert decide.student_precision("bf16", "cpu").name == "bf16"  # the paper configs' bf16 now pairs with this JSON
    with pytest.raises(PrecisionError, match="teacher.train_precision"):
        decide.teacher_precision("fp32", "cpu")


class AutocastSpy(torch.nn.Module):
    """Records whether autocast was on inside its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.seen: list = []

    def forward(self, pixels):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return {"logits": self.linear(pixels.float().flatten(1)[:, :4])}


def test_the_teacher_adds_no_autocast_of_its_own_under_deepspeed():
    """DeepSpeed's engine owns the forward's autocast (its JSON); an outer one would be replaced or switched off."""
    from rkd.teacher.training import TeacherObjective

    batch = {"pixels": torch.zeros(2, 2, 2, 1, dtype=torch.uint8), "label": torch.tensor([0, 1])}
    spy = AutocastSpy()
    TeacherObjective(False, precision="bf16", deepspeed=True)(spy, batch, True)
    TeacherObjective(False, precision="bf16")(spy, batch, True)
    assert spy.seen == [False, True]


def test_the_teachers_precision_holds_inside_an_accelerator_with_another_mixed_precision(fresh_accelerate_state):
    """mixed_precision=bf16 for the students must not turn an fp32 teacher into a bf16 one (Accelerate wraps forward)."""
    from accelerate import Accelerator

    from rkd.teacher.training import TeacherObjective

    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    spy = accelerator.prepare_model(AutocastSpy())
    batch = {"pixels": torch.zeros(2, 2, 2, 1, dtype=torch.uint8), "label": torch.tensor([0, 1])}
    TeacherObjective(False, precision="fp32")(spy, batch, True)
    spy(batch["pixels"])  # outside the objective, Accelerate's autocast is back
    assert spy.seen == [False, True]


def test_computing_in_restores_the_wrapped_forward_even_on_error(fresh_accelerate_state):
    from accelerate import Accelerator

    model = Accelerator(cpu=True, mixed_precision="bf16").prepare_model(AutocastSpy())
    wrapped = model.forward
    with pytest.raises(ValueError), computing_in(model, "fp32", "cpu"):
        raise ValueError("inside")
    assert model.forward is wrapped


def test_observed_precision_sees_below_the_wrappers(fresh_accelerate_state):
    from accelerate import Accelerator

    from rkd.hardware.precision import observed_precision

    model = Accelerator(cpu=True, mixed_precision="bf16").prepare_model(AutocastSpy())
    x = torch.zeros(2, 4)
    assert observed_precision(model, lambda: model(x), "cpu") == "bf16"
    with computing_in(model, "fp32", "cpu"):
        assert observed_precision(model, lambda: model(x), "cpu") == "fp32"
    assert observed_precision(model, lambda: None, "cpu") == "not called"
