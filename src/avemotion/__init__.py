"""avemotion: reproducible audio-visual emotion classification on RAVDESS (Snakemake + PyTorch + MLflow)."""

__version__ = "0.1.0"
