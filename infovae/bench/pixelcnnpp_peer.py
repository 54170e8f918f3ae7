"""PixelCNN++ training throughput against the widely used PyTorch port
(pclucas14/pixel-cnn-pp), both measured in the same process.

The port is not part of infovae and is never copied into it: pass the directory
of a checkout (its ``model.py``, ``layers.py``, ``utils.py``) as ``peer_path``.
Its modules are imported from there (they are named ``model``, ``layers`` and
``utils`` and import each other by those names). Its loss calls ``.cuda()``
unconditionally; on a CPU run ``Tensor.cuda`` is made the identity for the
duration of each peer step. Its ``utils.py`` carries one Python 2 statement
(``print e``, in a helper never called here), made a call when it is loaded;
nothing else of it is changed.

Both train the same configuration on the same random RGB 32x32 batch (values on
the 8-bit grid in [-1, 1]): ``nr_resnet`` blocks per stage, ``nr_filters``,
``nr_logistic_mix`` logistics, dropout 0.5, Adam, one optimizer step per
iteration: loss forward, backward, step. The port's dropout is a fixed
``Dropout2d(0.5)`` (whole channels); ours is timed twice where dropout > 0:
``ours`` drops single activations as the authors' code does (the default), and
``ours_channel_dropout`` drops whole channels as the port does
(``dropout_mode="channel"``, which skips the dropped channels' convolution). Ours also conditions every
block on a code z (latent_dim 8); the port is unconditional and uses weight
normalisation. Timing: blocks of ``steps`` steps of each, alternated ``rounds``
times after a warm-up; the median per-step time of each is reported, with the
images/s ratio. Peak memory: the rise of the process's peak resident set over
one step of each (Linux), measured after all timings.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

import infovae
from infovae import DataSpec

from .regularizers import peak_memory


@contextlib.contextmanager
def _cuda_is_identity_on_cpu():
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def load_peer(peer_path: str):
    """(model module, utils module) of the port checkout at ``peer_path``."""
    root = Path(peer_path).expanduser().resolve()
    missing = [f for f in ("model.py", "layers.py", "utils.py") if not (root / f).is_file()]
    if missing:
        raise ValueError(f"--peer-path {peer_path}: no {', '.join(missing)} there; point it at a checkout of "
                         "pclucas14/pixel-cnn-pp")
    for name in ("layers", "utils", "model"):
        if name in sys.modules and not str(getattr(sys.modules[name], "__file__", "")).startswith(str(root)):
            raise ValueError(f"a module named {name!r} is already imported from elsewhere; run the peer "
                             "comparison in a fresh process")
    if "utils" not in sys.modules:
        # utils.py has one Python 2 statement (``print e`` in load_part_of_model, which the
        # benchmark never calls); it is made a call in memory, the file is left as it is.
        source = (root / "utils.py").read_text()
        source = source.replace("print e\n", "print(e)\n")
        spec = importlib.util.spec_from_loader("utils", loader=None, origin=str(root / "utils.py"))
        utils = importlib.util.module_from_spec(spec)
        utils.__file__ = str(root / "utils.py")
        exec(compile(source, str(root / "utils.py"), "exec"), utils.__dict__)
        sys.modules["utils"] = utils
    sys.path.insert(0, str(root))
    try:
        model = importlib.import_module("model")
    finally:
        sys.path.remove(str(root))
    return model, sys.modules["utils"]


def _ours_step(x: torch.Tensor, nr_resnet: int, nr_filters: int, nr_mix: int, dropout: float, seed: int,
               compile_: bool = False, dropout_mode: str = "element") -> Callable[[], None]:
    spec = DataSpec("rgb8", (3, 32, 32))
    torch.manual_seed(seed)
    dec = infovae.registry().create(
        "decoders", "pixelcnnpp",
        {"nr_resnet": nr_resnet, "nr_filters": nr_filters, "nr_logistic_mix": nr_mix, "dropout": dropout,
         "dropout_mode": dropout_mode},
        spec, 8).train()
    z = torch.randn(x.shape[0], 8, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(dec.parameters(), lr=1e-4)

    def loss_fn(xx, zz):
        return -dec.log_prob(xx, zz).mean()

    if compile_:
        loss_fn = torch.compile(loss_fn)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, z).backward()
        opt.step()

    return step


def _peer_step(peer, x: torch.Tensor, nr_resnet: int, nr_filters: int, nr_mix: int, seed: int) -> Callable[[], None]:
    model_mod, utils_mod = peer
    torch.manual_seed(seed)
    net = model_mod.PixelCNN(nr_resnet=nr_resnet, nr_filters=nr_filters, nr_logistic_mix=nr_mix, input_channels=3).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step():
        with _cuda_is_identity_on_cpu():
            opt.zero_grad(set_to_none=True)
            loss = utils_mod.discretized_mix_logistic_loss(x, net(x))
            loss.backward()
            opt.step()

    return step


def run(peer_path: str, batch_size: int = 16, nr_resnet: int = 1, nr_filters: int = 32, nr_mix: int = 5,
        dropout: float = 0.5, steps: int = 2, rounds: int = 5, warmup: int = 2, seed: int = 0,
        compile_: bool = False, measure_memory: bool = True,
        progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    say = progress or (lambda m: None)
    peer = load_peer(peer_path)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch_size, 3, 32, 32), generator=g).float() / 127.5 - 1.0
    fns = {"ours": _ours_step(x, nr_resnet, nr_filters, nr_mix, dropout, seed),
           "peer": _peer_step(peer, x, nr_resnet, nr_filters, nr_mix, seed)}
    if dropout > 0:  # the port's own dropout law: whole channels (nn.Dropout2d)
        fns["ours_channel_dropout"] = _ours_step(x, nr_resnet, nr_filters, nr_mix, dropout, seed,
                                                 dropout_mode="channel")
    compile_s = None
    if compile_:
        fns["ours_compiled"] = _ours_step(x, nr_resnet, nr_filters, nr_mix, dropout, seed, compile_=True)
        t0 = time.perf_counter()
        fns["ours_compiled"]()
        compile_s = time.perf_counter() - t0
    say("warm-up")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, list] = {k: [] for k in fns}
    cpu: Dict[str, list] = {k: [] for k in fns}
    load_before = os.getloadavg()
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        names = list(fns)
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                fns[name]()
            times[name].append((time.perf_counter() - t0) / steps)
            cpu[name].append((time.process_time() - c0) / steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    out: Dict[str, Any] = {
        "config": {"image": "rgb8 3x32x32", "batch_size": batch_size, "nr_resnet": nr_resnet, "nr_filters": nr_filters,
                   "nr_logistic_mix": nr_mix, "dropout": dropout},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "steps_per_round": steps, "rounds": rounds,
        "step_s": med, "images_per_s": {k: batch_size / v for k, v in med.items()},
        "ours_over_peer": med["peer"] / med["ours"], "compile_s": compile_s,
        "step_cpu_s": med_cpu, "ours_over_peer_cpu": med_cpu["peer"] / med_cpu["ours"],
        "step_s_per_round": times, "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    if compile_:
        out["compiled_over_peer"] = med["peer"] / med["ours_compiled"]
    if "ours_channel_dropout" in med:
        out["channel_dropout_over_peer"] = med["peer"] / med["ours_channel_dropout"]
        out["channel_dropout_over_peer_cpu"] = med_cpu["peer"] / med_cpu["ours_channel_dropout"]
    if measure_memory:
        say("peak memory")
        out["peak_bytes"] = {k: peak_memory(fn, torch.device("cpu")) for k, fn in fns.items()}
    return out


def table(result: Dict[str, Any]):
    """A rich Table of a ``run`` result."""
    from rich.table import Table

    c = result["config"]
    t = Table(title=(f"PixelCNN++ training vs pclucas14/pixel-cnn-pp: {c['image']}, batch {c['batch_size']}, "
                     f"({c['nr_resnet']}, {c['nr_filters']}, {c['nr_logistic_mix']}), dropout {c['dropout']}, "
                     f"{result['threads']} thread(s), torch {result['torch']}"))
    for col in ("contender", "step s", "images/s", "vs peer", "vs peer (CPU s)", "peak MiB"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    peak = result.get("peak_bytes") or {}
    for name, s in result["step_s"].items():
        ratio = result["step_s"]["peer"] / s
        mib = "n/a" if peak.get(name) is None else f"{peak[name] / 2**20:.0f}"
        cpu = result.get("step_cpu_s", {})
        cpu_ratio = f"{cpu['peer'] / cpu[name]:.2f}x" if name in cpu else "n/a"
        t.add_row(name, f"{s:.3f}", f"{result['images_per_s'][name]:.2f}", f"{ratio:.2f}x", cpu_ratio, mib)
    if result.get("compile_s") is not None:
        t.caption = f"torch.compile time (first step of ours_compiled): {result['compile_s']:.1f} s"
    return t
