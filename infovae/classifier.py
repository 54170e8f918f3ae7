"""A small CNN that labels images, for the class-distribution metric (the paper's Figure 3 C).

The metric classifies a model's samples, so the classifier must deserve the name: on binarized MNIST
this CNN, fit on a seeded 80% of the labelled test split, scores >= 97% on the other 20% (the figure
is recorded with every result and in benchmarks/RESULTS.md). It is trained once per (data, labels,
split, architecture) and can be cached as safetensors (tensors plus a JSON metadata header; loading
never executes code) in a directory the caller names; a cached file is used only when its
fingerprint of the data, labels, split and settings matches.

Images are (N, C, H, W) float model values. The network: two stages of Conv2d(3x3, pad 1) + ReLU,
each followed by a 2x2 max-pool while the smaller side is at least 4, then Linear(hidden) + ReLU
and Linear(num_classes). Training: Adam, cross entropy, fixed seed, on the CPU or the data's device.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

#: Bumped when the architecture or training recipe changes, so old cache files are not reused.
RECIPE_VERSION = 1
CHANNELS = (32, 64)
HIDDEN = 128
EPOCHS = 10
MIN_STEPS = 300
BATCH_SIZE = 64
LR = 1e-3


class ClassifierCNN(nn.Module):
    """x (B, C, H, W) float -> logits (B, num_classes)."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int,
                 channels: Tuple[int, int] = CHANNELS, hidden: int = HIDDEN):
        super().__init__()
        self.shape = (int(in_channels), int(height), int(width))
        self.num_classes = int(num_classes)
        layers, prev, h, w = [], in_channels, height, width
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(prev * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Predicted class of every image of x (N, C, H, W): (N,) int64 numpy array."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        out = [self(x[i:i + batch_size].to(dev, torch.float32)).argmax(1).cpu() for i in range(0, x.shape[0], batch_size)]
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def fingerprint(x: torch.Tensor, y: torch.Tensor, train_index: torch.Tensor, num_classes: int, seed: int) -> str:
    """sha256 of the images (as float32), labels, training indices and the recipe."""
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": RECIPE_VERSION, "channels": CHANNELS, "hidden": HIDDEN, "epochs": EPOCHS, "min_steps": MIN_STEPS,
                         "batch_size": BATCH_SIZE, "lr": LR, "classes": int(num_classes), "seed": int(seed),
                         "shape": list(x.shape)}).encode())
    for t in (x.detach().to("cpu", torch.float32).contiguous(), y.detach().to("cpu", torch.int64).contiguous(),
              train_index.detach().to("cpu", torch.int64).contiguous()):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fit_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0) -> ClassifierCNN:
    """Fit a ClassifierCNN on images x (N, C, H, W) and labels y (N,) in [0, num_classes).

    max(``MIN_STEPS``, ``EPOCHS`` passes) Adam steps of ``BATCH_SIZE`` examples, shuffled with ``seed``;
    deterministic given the seed on one device.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"the classifier needs at least 2 labelled examples, got {n}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClassifierCNN(x.shape[1], x.shape[2], x.shape[3], num_classes).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    xs, ys = x.to(torch.float32), y.to(x.device, torch.int64)
    steps = max(MIN_STEPS, EPOCHS * math.ceil(n / BATCH_SIZE))
    perm, pos = torch.randperm(n, generator=g), 0
    net.train()
    for _ in range(steps):
        if pos + BATCH_SIZE > n and pos > 0:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + BATCH_SIZE].to(x.device)
        pos += BATCH_SIZE
        loss = nn.functional.cross_entropy(net(xs[idx]), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return net


def _load(path: Path, fp: str) -> Optional[Tuple[ClassifierCNN, Dict[str, object]]]:
    from .io import read_safetensors

    try:
        tensors, meta = read_safetensors(path)
        info = json.loads(meta.get("infovae_classifier", "{}"))
    except Exception:  # noqa: BLE001 - an unreadable cache file is retrained and replaced
        return None
    if info.get("fingerprint") != fp:
        return None
    c, h, w = info["shape"]
    net = ClassifierCNN(c, h, w, info["num_classes"])
    try:
        net.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError):
        return None
    net.eval()
    return net, info


def trained_classifier(x: torch.Tensor, y: torch.Tensor, train_index: torch.Tensor, test_index: torch.Tensor,
                       num_classes: int, cache_dir: Optional[Path] = None, seed: int = 0) -> Tuple[ClassifierCNN, Dict[str, object]]:
    """The CNN fit on x[train_index], y[train_index] and its accuracy on x[test_index] (held out).

    With ``cache_dir``, a file ``classifier-<fingerprint>.safetensors`` there is reused when its fingerprint
    matches, else the CNN is trained and saved there (atomically). Returns (network in eval mode on x's
    device, info: accuracy, n_train, n_test, fingerprint, path or None, cached: whether it was loaded).
    """
    fp = fingerprint(x, y, train_index, num_classes, seed)
    path = Path(cache_dir) / f"classifier-{fp[:16]}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        loaded = _load(path, fp)
        if loaded is not None:
            net, info = loaded
            return net.to(x.device), {**info, "path": str(path), "cached": True}
    net = fit_classifier(x[train_index], y[train_index], num_classes, seed)
    accuracy = float((net.predict(x[test_index]) == y[test_index].cpu().numpy()).mean()) if test_index.numel() else float("nan")
    info = {"fingerprint": fp, "accuracy": accuracy, "n_train": int(train_index.numel()), "n_test": int(test_index.numel()),
            "shape": list(net.shape), "num_classes": int(num_classes), "recipe": RECIPE_VERSION}
    if path is not None:
        from .io import atomic_save_safetensors

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(path, net.state_dict(), metadata={"infovae_classifier": json.dumps(info)})
    return net, {**info, "path": str(path) if path else None, "cached": False}


def describe() -> str:
    return (f"CNN: 2 x [Conv2d 3x3 ({CHANNELS[0]}, {CHANNELS[1]} channels) + ReLU + 2x2 max-pool] + Linear({HIDDEN}) + ReLU + Linear; "
            f"Adam {LR:g}, batch {BATCH_SIZE}, max({MIN_STEPS} steps, {EPOCHS} epochs), seed 0")
