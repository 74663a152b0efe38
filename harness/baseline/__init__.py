"""Reference beta-VAE family (DESIGN 7): models, training loop, and export to every submission format.

>>> from harness.baseline import train, export_encoder, export_checkpoint
"""

from harness.baseline.losses import MODELS, model_names, resolve_params
from harness.baseline.models import ConvEncoder, DeconvDecoder, Discriminator, MeanEncoder


def __getattr__(name):
    # train/export pull in tqdm, matplotlib and the ONNX exporter: import them on first use.
    if name in ("train", "TrainResult", "plot_losses", "read_log"):
        from harness.baseline import training

        return getattr(training, name)
    if name in ("export_encoder", "export_checkpoint", "ExportResult", "FORMATS"):
        from harness.baseline import export

        return getattr(export, name)
    raise AttributeError(f"module 'harness.baseline' has no attribute {name!r}")


__all__ = ["ConvEncoder", "DeconvDecoder", "Discriminator", "ExportResult", "FORMATS", "MODELS", "MeanEncoder",
           "TrainResult", "export_checkpoint", "export_encoder", "model_names", "plot_losses", "read_log",
           "resolve_params", "train"]
