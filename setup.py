"""rkd: robust knowledge distillation of large vision models into channel-robust semantic transmitters."""

from setuptools import find_packages, setup

# rkd export's ONNX files (torch's dynamo exporter needs onnxscript) and their onnxruntime check
ONNX = ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.20"]

setup(
    name="rkd",
    version="0.1.0",
    description="RKD-SC: large-model-enabled semantic communication through robust knowledge distillation",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rkd", "rkd.*"]),
    package_data={"rkd": ["configs/*.yaml"]},
    install_requires=[
        "torch>=2.3",
        "accelerate>=1.0",
        "transformers>=4.45",
        "datasets>=3.0",
        "safetensors>=0.4",
        "einops>=0.8",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "pyyaml>=6.0",
        "pydantic>=2.7",  # typed config validation (rkd.config.schema; with_config on plain dataclasses)
        "pillow>=10.0",
    ],
    extras_require={
        # pytest-xdist: `make test` on several cores; tensorboard: tests/test_tracking.py
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "tensorboard>=2.14", *ONNX],
        "onnx": ONNX,
        # make lint and the pre-commit hooks (.pre-commit-config.yaml runs these from .venv)
        "lint": ["ruff>=0.15", "mypy>=1.18", "pre-commit>=4"],
        "deepspeed": ["deepspeed>=0.15"],
        # the documentation site (make docs); mkdocs 1.x: the material theme and the hooks use its plugin API
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings>=1.0", "mkdocstrings-python>=2.0"],
    },
    entry_points={"console_scripts": ["rkd=rkd.cli:main"]},
)
