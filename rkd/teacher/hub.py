"""A hub or ``save_pretrained`` teacher as transformers describes it: its config and its image processor.

Every teacher kind reads these, so nothing here depends on a kind or on rkd's config.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

from rkd.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _size_of(value: Any) -> int | None:
    """A square side from an HF processor ``size``/``crop_size`` (int, dict or SizeDict)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    get = value.get if isinstance(value, dict) else (lambda k: getattr(value, k, None))
    height, width = get("height"), get("width")
    if height and width:
        if height != width:
            warnings.warn(
                f"image processor size {height}x{width} is not square; rkd uses {max(height, width)}x{max(height, width)}",
                stacklevel=2,
            )
        return int(max(height, width))
    for key in ("shortest_edge", "longest_edge"):
        side = get(key)
        if side:
            return int(side)
    return None


def load_processor(source: str, trust_remote_code: bool = False, required: bool = False) -> Any:
    """``AutoImageProcessor.from_pretrained``; without a usable one: a ``ConfigError`` when ``required``, else
    None with a warning (the model config then supplies the size and ImageNet statistics).

    A pretrained teacher requires its processor: its normalisation is part of what it learnt (ViTs expect
    mean and std 0.5, not ImageNet's), and a guessed one silently costs accuracy.
    """
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # missing preprocessor_config.json, or a processor class we cannot build
        found = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
        if required:
            raise ConfigError(
                f"teacher.source = {source!r} has no usable image processor ({found}); its input size and "
                f"normalisation cannot be guessed safely: save the checkpoint's processor beside it, e.g. "
                f"AutoImageProcessor.from_pretrained(<hub id>).save_pretrained({source!r})"
            ) from None
        warnings.warn(
            f"no usable image processor for teacher {source!r} ({found}); "
            f"using the model config's image_size and standard mean/std",
            stacklevel=2,
        )
        return None


def square_processor(size: int, mean: Any, std: Any) -> Any:
    """A standard ``ViTImageProcessor`` recording a plain resize to ``size`` and the given statistics."""
    import transformers

    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor  # no torchvision needed
    return cls(do_resize=True, size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std))


def input_settings(processor: Any, model_config: Any, default_stats: tuple, size_override: int | None) -> dict:
    """``size``, ``channels``, ``mean``, ``std`` of the teacher's input: the processor's size (its crop size
    when it center-crops) and statistics, else ``default_stats`` and the model config's size; the
    model's channel count."""
    channels = int(getattr(model_config, "num_channels", 3) or 3)
    size = size_override
    mean, std = default_stats
    if processor is not None:
        if size is None and getattr(processor, "do_center_crop", False):
            size = _size_of(getattr(processor, "crop_size", None))
        if size is None:
            size = _size_of(getattr(processor, "size", None))
        if getattr(processor, "do_normalize", True) is False:
            mean, std = (0.0,), (1.0,)
        else:
            mean = getattr(processor, "image_mean", None) or mean
            std = getattr(processor, "image_std", None) or std
    if size is None:
        native = getattr(model_config, "image_size", None)
        size = int(native[0] if isinstance(native, (list, tuple)) else native or 224)
    return {"size": int(size), "channels": channels, "mean": tuple(mean), "std": tuple(std)}


class Checkpoint(NamedTuple):
    """A hub id or ``save_pretrained`` directory (``ref``, what ``from_pretrained`` takes) and its HF config."""

    ref: str
    config: Any


def load_checkpoint(source: str, trust_remote_code: bool) -> Checkpoint:
    """The checkpoint's config only, no weights (the pre-flight probe builds the model from it); errors name
    ``teacher.source`` and the fix."""
    from transformers import AutoConfig

    local = Path(source).expanduser()
    if source.startswith(("/", "./", "../", "~")) and not local.is_dir():
        raise ConfigError(
            f"teacher.source = {source!r}: directory {str(local)!r} does not exist; expected 'embedded', "
            f"a hub id (e.g. google/vit-base-patch16-224) or a save_pretrained directory"
        )
    ref = str(local) if local.is_dir() else source
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except Exception as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ConfigError(
                f"teacher.source = {source!r} needs its own Python code to load (its config has an "
                f"auto_map), which rkd does not run unless asked: add --trust-remote-code to the command "
                f"line if you trust that checkpoint"
            ) from None
        raise ConfigError(
            f"teacher.source = {source!r}: could not load its config ({type(exc).__name__}: {exc}); "
            f"expected 'embedded', a hub id reachable from here, or a save_pretrained directory"
        ) from exc
    return Checkpoint(ref, config)
