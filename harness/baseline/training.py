"""Training loop for the beta-VAE family: progress bar, weights-only checkpoints, resume, loss curve, export.

>>> from harness.baseline import train
>>> result = train("beta_vae", "dummy", out="run/", steps=200, batch_size=16)   # doctest: +SKIP

Everything random comes from the seed: the data stream (numpy ``PCG64(seed)``), the weight init
(``torch.manual_seed(seed)``) and the reparameterisation noise (a ``torch.Generator`` seeded with
``seed + 1``). Their states are saved in every checkpoint, so an interrupted run resumed from
``DIR/checkpoint.safetensors`` continues exactly as if it had never stopped (same thread count).
"""

from __future__ import annotations

import csv
import json
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import harness
from harness import datasets
from harness.allocator import keep_freed_memory
from harness.baseline import checkpoint as ckpt
from harness.baseline.data import BatchStream, loader, to_tensor
from harness.baseline.losses import MODELS, discriminator_loss, resolve_params, vae_loss
from harness.baseline.models import ConvEncoder, DeconvDecoder, Discriminator, check_weight_init, init_weights
from harness.errors import InputError

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "train_log.csv"
PLOT_NAME = "loss_curve.png"
SUMMARY_NAME = "training.json"

# Config keys that must match for a resume; steps, checkpoint_every and log_every may change.
_RESUME_KEYS = ("model", "dataset", "dataset_options", "batch_size", "lr", "seed", "latent_dim", "params",
                "weight_init")
# Checkpoints written before weight_init was a choice used PyTorch's default.
_LEGACY_DEFAULTS = {"weight_init": "torch"}


@dataclass
class TrainConfig:
    model: str = "beta_vae"
    dataset: str = "dsprites"
    steps: int = 10000
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0
    latent_dim: int = 10
    weight_init: str = "glorot"
    params: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    checkpoint_every: int = 1000
    log_every: int = 50


@dataclass
class TrainResult:
    out: Path
    step: int
    checkpoint: Path
    log: Path
    plot: Path | None
    submission: Path | None
    train_seconds: float
    cpu_seconds: float
    last_terms: dict


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    return resolved


class _Run:
    """The modules, optimisers, RNGs and data stream of one training run."""

    def __init__(self, config: TrainConfig, dataset, device: torch.device):
        height, width, channels = dataset.observation_shape
        torch.manual_seed(config.seed)
        self.encoder = ConvEncoder(channels, height, width, config.latent_dim).to(device)
        self.decoder = DeconvDecoder(channels, height, width, config.latent_dim).to(device)
        # After both modules exist, so that "torch" draws exactly what it did before it was a choice.
        init_weights(self.encoder, config.weight_init)
        init_weights(self.decoder, config.weight_init)
        vae_params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.modules = {"encoder": self.encoder, "decoder": self.decoder}
        # DL study: Adam(lr, beta1 0.9, beta2 0.999, eps 1e-8) for the VAE.
        self.optimizers = {"vae": torch.optim.Adam(vae_params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)}
        self.discriminator = None
        if MODELS[config.model].needs_discriminator:
            p = config.params
            self.discriminator = init_weights(Discriminator(config.latent_dim), config.weight_init).to(device)
            self.modules["discriminator"] = self.discriminator
            self.optimizers["discriminator"] = torch.optim.Adam(
                self.discriminator.parameters(), lr=p["disc_lr"], betas=(p["disc_beta1"], p["disc_beta2"]), eps=1e-8)
        self.noise = torch.Generator(device=device)
        self.noise.manual_seed(config.seed + 1)
        self.stream = BatchStream(dataset, config.batch_size, config.seed)
        self.step = 0
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0

    def save(self, path: Path, config: TrainConfig) -> None:
        meta = {"config": asdict(config), "step": self.step, "data_rng": self.stream.state(),
                "train_seconds": self.train_seconds, "cpu_seconds": self.cpu_seconds,
                "harness": harness.__version__, "torch": torch.__version__}
        ckpt.save_checkpoint(path, modules=self.modules, optimizers=self.optimizers, meta=meta,
                             rng_state=self.noise.get_state())

    def restore(self, meta: dict, tensors: dict) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(ckpt.module_state(tensors, name))
        for name, optimizer in self.optimizers.items():
            ckpt.restore_optimizer(optimizer, name, meta, tensors)
        self.noise.set_state(tensors["rng.torch"])
        self.stream.set_state(meta["data_rng"])
        self.step = int(meta["step"])
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self.cpu_seconds = float(meta.get("cpu_seconds", 0.0))


def train(model: str = "beta_vae", dataset: str = "dsprites", *, out, steps: int = 10000, batch_size: int = 64,
          lr: float = 1e-4, seed: int = 0, latent_dim: int = 10, weight_init: str = "glorot", params: dict | None = None,
          dataset_options: dict | None = None, device: str = "auto", threads: int | None = None,
          checkpoint_every: int = 1000, log_every: int = 50, resume: bool = True, progress: bool | Callable = True,
          export_format: str | None = "onnx", with_logvar: bool = False, name: str | None = None) -> TrainResult:
    """Train one model of the beta-VAE family and export its encoder as a submission in ``out``.

    Parameters
    ----------
    model : one of ``beta_vae``, ``annealed_vae``, ``factor_vae``, ``dip_vae_i``, ``dip_vae_ii``, ``beta_tcvae``.
    dataset : a registered dataset name or a dataset file (``harness.datasets.load``).
    out : run directory: ``checkpoint.safetensors``, ``train_log.csv``, ``loss_curve.png``,
        ``training.json`` and the exported submission (``submission.json`` + model file).
    steps : total optimisation steps (a resumed run continues up to this number).
    params : model hyperparameters overriding the study defaults (``losses.MODELS[model].defaults``).
    weight_init : ``glorot`` (disentanglement_lib's: Glorot-uniform kernels, zero biases) or ``torch``
        (PyTorch's default layer init; the example submission was trained with it).
    threads : ``torch.set_num_threads`` for the run (None leaves torch's default).
    resume : continue from ``out/checkpoint.safetensors`` when it exists (its config must match).
    export_format : ``onnx``, ``torchscript``, ``torch_export`` or None (no export).
    progress : True: a tqdm bar on stderr; False: none; or a callable ``(total, initial, desc)`` returning an
        object with tqdm's ``update``, ``set_postfix_str`` and ``close`` (the CLI's plain lines off a terminal).

    On KeyboardInterrupt the current state is checkpointed before the exception propagates.
    """
    if steps < 1 or batch_size < 2 or lr <= 0 or latent_dim < 1 or checkpoint_every < 1 or log_every < 1:
        raise InputError("steps, checkpoint_every and log_every must be >= 1, batch_size >= 2, lr > 0, latent_dim >= 1")
    check_weight_init(weight_init)  # before the run folder is created
    config = TrainConfig(model=model, dataset=str(dataset), steps=int(steps), batch_size=int(batch_size),
                         lr=float(lr), seed=int(seed), latent_dim=int(latent_dim), weight_init=str(weight_init),
                         params=resolve_params(model, params), dataset_options=dict(dataset_options or {}),
                         checkpoint_every=int(checkpoint_every), log_every=int(log_every))
    if threads:
        torch.set_num_threads(int(threads))
    keep_freed_memory()
    device_ = resolve_device(device)
    data = datasets.load(config.dataset, **config.dataset_options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(config, data, device_)
    checkpoint_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME
    if resume and checkpoint_path.exists():
        meta, tensors = ckpt.read_checkpoint(checkpoint_path)
        _check_resumable(meta["config"], asdict(config), checkpoint_path)
        run.restore(meta, tensors)
        _truncate_log(log_path, run.step)
    elif log_path.exists():
        log_path.unlink()

    last_terms = _loop(run, config, data, device_, checkpoint_path, log_path, progress)
    if not last_terms and log_path.exists():  # resumed at the requested step: report the last logged row
        log = read_log(log_path)
        last_terms = {k: float(v[-1]) for k, v in log.items() if k not in ("step", "elapsed_s") and len(v)}

    plot_path = plot_losses(log_path, out / PLOT_NAME) if log_path.exists() else None
    submission = None
    if export_format:
        from harness.baseline.export import export_checkpoint

        submission = export_checkpoint(checkpoint_path, out, format=export_format, with_logvar=with_logvar,
                                       name=name or f"{model}-{data.name}").manifest_path
    summary = {"config": asdict(config), "step": run.step, "train_seconds": round(run.train_seconds, 1),
               "cpu_seconds": round(run.cpu_seconds, 1), "torch_threads": torch.get_num_threads(),
               "device": str(device_), "last_terms": last_terms, "harness": harness.__version__,
               "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(out, run.step, checkpoint_path, log_path, plot_path, submission,
                       run.train_seconds, run.cpu_seconds, last_terms)


def _progress_bar(progress, total: int, initial: int, desc: str):
    if callable(progress):
        return progress(total, initial, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not progress, desc=desc, unit="step", dynamic_ncols=True)


def _loop(run: _Run, config: TrainConfig, data, device, checkpoint_path: Path, log_path: Path,
          progress: bool | Callable) -> dict:
    dataset_size = max(2, int(data.num_observations))
    batches = iter(loader(run.stream))
    window: dict[str, list[float]] = {}
    last_terms: dict = {}
    bar = _progress_bar(progress, config.steps, run.step, config.model)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    previous_sigterm = _sigterm_as_interrupt()
    try:
        while run.step < config.steps:
            x = to_tensor(next(batches), device)
            terms = _train_step(run, config, x, dataset_size)
            run.step += 1
            for key, value in terms.items():
                window.setdefault(key, []).append(value)
            if not np.isfinite(terms["loss"]):
                raise InputError(f"loss became {terms['loss']} at step {run.step}; lower --lr or the regulariser weight")
            if run.step % config.log_every == 0 or run.step == config.steps:
                last_terms = {k: float(np.mean(v)) for k, v in window.items()}
                _append_log(log_path, run.step, time.perf_counter() - wall0 + run.train_seconds, last_terms)
                window.clear()
                bar.set_postfix_str(", ".join(f"{k}={v:.4g}" for k, v in last_terms.items()))
            bar.update(1)
            if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                run.train_seconds += time.perf_counter() - wall0
                run.cpu_seconds += time.process_time() - cpu0
                wall0, cpu0 = time.perf_counter(), time.process_time()
                run.save(checkpoint_path, config)
    except KeyboardInterrupt:
        run.train_seconds += time.perf_counter() - wall0
        run.cpu_seconds += time.process_time() - cpu0
        _truncate_log(log_path, run.step)
        run.save(checkpoint_path, config)
        bar.close()
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    bar.close()
    if not checkpoint_path.exists():  # resumed at or past the requested steps: keep the file we had
        run.save(checkpoint_path, config)
    return last_terms


def _sigterm_as_interrupt():
    """Make SIGTERM (``kill``, a scheduler's preemption) checkpoint like Ctrl-C; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _train_step(run: _Run, config: TrainConfig, x: torch.Tensor, dataset_size: int) -> dict:
    run.encoder.train()
    mean, logvar = run.encoder(x)
    z = mean + torch.randn(mean.shape, generator=run.noise, device=mean.device) * torch.exp(0.5 * logvar)
    logits = run.decoder(z)
    loss, terms = vae_loss(config.model, config.params, x=x, mean=mean, logvar=logvar, z=z, logits=logits,
                           step=run.step, dataset_size=dataset_size, discriminator=run.discriminator)
    optimizer = run.optimizers["vae"]
    optimizer.zero_grad(set_to_none=True)
    if run.discriminator is not None:
        loss.backward()
        optimizer.step()
        # zero_grad drops what the VAE loss left in the discriminator; its own loss sees detached codes.
        d_loss = discriminator_loss(run.discriminator, z, run.noise)
        run.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        run.optimizers["discriminator"].step()
        terms["disc"] = float(d_loss.detach())
    else:
        loss.backward()
        optimizer.step()
    return terms


def _check_resumable(saved: dict, wanted: dict, path: Path) -> None:
    saved = {**_LEGACY_DEFAULTS, **saved}
    differing = [k for k in _RESUME_KEYS if saved.get(k) != wanted.get(k)]
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {wanted.get(k)!r}" for k in differing)
        raise InputError(f"{path} belongs to a different run ({detail}); use another --out or --no-resume")


def _append_log(path: Path, step: int, elapsed: float, terms: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "elapsed_s", *terms])
        writer.writerow([step, f"{elapsed:.2f}", *(f"{v:.6g}" for v in terms.values())])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows past ``step`` (they were written after the checkpoint we resume from)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def read_log(path) -> dict[str, np.ndarray]:
    with Path(path).open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], [r for r in rows[1:] if r]
    return {name: np.array([float(r[i]) for r in body]) for i, name in enumerate(header)}


def plot_losses(log_path, png_path) -> Path:
    """One panel per loss term against the step (log scale where a term stays positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator

    log = read_log(log_path)
    terms = [k for k in log if k not in ("step", "elapsed_s")]
    cols = min(3, len(terms))
    rows = -(-len(terms) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        ax.plot(log["step"], log[term], lw=1.2)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 120k, not 120000 running into its neighbour
        ax.grid(alpha=0.3)
        if len(log[term]) and (log[term] > 0).all() and log[term].max() / max(log[term].min(), 1e-12) > 5:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(f"{Path(log_path).parent.name}: training losses (mean per {int(log['step'][0]) if len(log['step']) else 0} steps)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
