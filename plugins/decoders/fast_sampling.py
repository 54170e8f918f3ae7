"""Ancestral sampling for the autoregressive decoders: the naive loop and the fast cached one.

Naive: for every pixel in raster order, one full network pass over the whole canvas,
then the pixel is drawn from the parameters at its position.

Fast (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models"): the network, written against the ``ops`` primitives of
``autoregressive.py``, is recorded once as a graph of layers. For every layer output
position we know the first step at which it can be computed (its *availability*: the
latest pixel it depends on, found by max-pooling availability maps through the same
geometry); every layer keeps a cache holding its outputs so far, and at step i each
layer computes only the positions that became available at step i, from windows of
its inputs' caches. Over a whole image every layer computes every position once,
exactly one network pass in total, instead of one pass per pixel. Strided and
transposed layers of PixelCNN++ need no special case: their positions simply become
available every second (fourth) row and column.

Both samplers draw every uniform up front (``AutoregressiveDecoder.sample``) and turn
the parameters of pixel i plus the uniforms of pixel i into its value with the same
``sample_pixel`` call on tensors of the same shape, so they consume randomness
identically and the samples agree exactly when the parameters do. The parameters are
the same function evaluated by different kernels (whole image vs windows), so in
floating point they can differ in the last bits; a draw then differs only when its
uniform falls within that rounding distance of a decision boundary: with parameters
agreeing to ~1e-15 (float64) or ~1e-7 (float32) and bins 2/255 wide, a chance of
order 1e-13 or 1e-5 per subpixel. The tests compare float64 samples bitwise; the
benchmark reports the agreement of float32 samples (``compare_samplers`` too).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import infovae

from .autoregressive import ShiftedConv2d, ShiftedDeconv2d, TorchOps


# --------------------------------------------------------------------------------------------
# recording the network as a graph
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Node:
    """One layer output. ``inputs[0]`` is the spatial input of conv/deconv/shift nodes; the
    other inputs (``extras``) are read at the output positions. ``geom``: conv (kh, kw, s,
    left, right, top, bottom); deconv (kh, kw, s, crop_left); shift (down, right)."""

    kind: str
    inputs: Tuple[int, ...]
    channels: int
    size: Tuple[int, int]
    geom: Tuple[int, ...] = ()
    module: Optional[nn.Module] = None
    pre: Optional[Callable] = None
    post: Optional[Callable] = None
    fn: Optional[Callable] = None

    def signature(self) -> tuple:
        return (self.kind, self.inputs, self.size, self.geom)


@dataclass(frozen=True)
class Handle:
    """What network code holds in place of a tensor while it is being recorded."""

    index: int
    channels: int
    size: Tuple[int, int]

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.channels, *self.size)


def _conv_geometry(module: nn.Module) -> Tuple[Tuple[int, ...], Callable]:
    if isinstance(module, ShiftedConv2d):
        kh, kw = module.kernel
        return (kh, kw, module.stride, *module.pad), module.core
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding == (0, 0):
        return (1, 1, 1, 0, 0, 0, 0), module
    raise TypeError(f"ops.conv takes a ShiftedConv2d or a 1x1 nn.Conv2d, got {module!r}")


class GraphOps:
    """``ops`` that record the network (see ``autoregressive.py``); node 0 is the input x."""

    def __init__(self, channels: int, size: Tuple[int, int]):
        self.nodes: List[Node] = [Node("input", (), channels, tuple(size))]
        self.input = Handle(0, channels, tuple(size))

    def _add(self, node: Node, extras: Sequence[Handle]) -> Handle:
        for e in extras:
            if tuple(e.size) != node.size:
                raise ValueError(f"extra input of size {e.size} read at outputs of size {node.size}")
        self.nodes.append(node)
        return Handle(len(self.nodes) - 1, node.channels, node.size)

    def conv(self, module, x: Handle, pre=None, post=None, extras: Sequence[Handle] = (), channels=None) -> Handle:
        geom, core = _conv_geometry(module)
        kh, kw, s, pl, pr, pt, pb = geom
        h, w = x.size
        size = ((h + pt + pb - kh) // s + 1, (w + pl + pr - kw) // s + 1)
        node = Node("conv", (x.index, *(e.index for e in extras)), channels or module.out_channels, size, geom, core, pre, post)
        return self._add(node, extras)

    def deconv(self, module, x: Handle, pre=None, post=None, extras: Sequence[Handle] = (), channels=None) -> Handle:
        if not isinstance(module, ShiftedDeconv2d):
            raise TypeError(f"ops.deconv takes a ShiftedDeconv2d, got {module!r}")
        if pre is not None:
            raise ValueError("ops.deconv takes no pre-activation")
        kh, kw = module.kernel
        s = module.stride
        size = (s * x.size[0], s * x.size[1])
        node = Node("deconv", (x.index, *(e.index for e in extras)), channels or module.out_channels, size,
                    (kh, kw, s, module.crop_left), module.core, None, post)
        return self._add(node, extras)

    def shift(self, x: Handle, down: int = 0, right: int = 0, post=None, extras: Sequence[Handle] = (), channels=None) -> Handle:
        node = Node("shift", (x.index, *(e.index for e in extras)), channels or x.channels, x.size, (down, right), post=post)
        return self._add(node, extras)

    def pointwise(self, fn, *inputs: Handle, channels: int) -> Handle:
        sizes = {tuple(i.size) for i in inputs}
        if len(sizes) != 1:
            raise ValueError(f"pointwise inputs of different sizes {sorted(sizes)}")
        return self._add(Node("pointwise", tuple(i.index for i in inputs), channels, inputs[0].size, fn=fn), ())


def record(decoder, z: torch.Tensor) -> Tuple[List[Node], int]:
    """The decoder's network as a node list for codes z, and the index of its output node."""
    c, h, w = decoder.spec.shape
    ops = GraphOps(c, (h, w))
    out = decoder.network(ops, ops.input, z, False)
    return ops.nodes, out.index


# --------------------------------------------------------------------------------------------
# availability and schedule
# --------------------------------------------------------------------------------------------
def availability(sig: Tuple[tuple, ...], height: int, width: int) -> List[np.ndarray]:
    """For every node, (h, w) int64: the sampling step from which each output position can be computed.

    Pixel (r, c) of the input is known from step r * width + c + 1 on; zero padding from step 0.
    """
    maps: List[np.ndarray] = []
    for kind, inputs, size, geom in sig:
        if kind == "input":
            a = np.arange(1, height * width + 1, dtype=np.int64).reshape(height, width)
        else:
            src = maps[inputs[0]]
            if kind == "conv":
                kh, kw, s, pl, pr, pt, pb = geom
                t = F.pad(torch.from_numpy(src).double()[None, None], (pl, pr, pt, pb))
                a = F.max_pool2d(t, (kh, kw), stride=s)[0, 0].long().numpy()
            elif kind == "deconv":
                kh, kw, s, cl = geom
                h, w = src.shape
                full = np.zeros((s * (h - 1) + kh, s * (w - 1) + kw), dtype=np.int64)
                for i in range(kh):
                    for j in range(kw):
                        view = full[i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s]
                        np.maximum(view, src, out=view)
                a = full[: s * h, cl : cl + s * w]
            elif kind == "shift":
                down, right = geom
                a = np.pad(src, ((down, 0), (right, 0)))[: src.shape[0], : src.shape[1]]
            else:  # pointwise
                a = src
            for e in inputs[1:]:
                a = np.maximum(a, maps[e])
        if tuple(a.shape) != tuple(size):
            raise RuntimeError(f"availability map of shape {a.shape} for a node of size {size}")
        maps.append(np.ascontiguousarray(a))
    return maps


def _rectangles(avail: np.ndarray) -> List[Tuple[int, int, int, int, int]]:
    """Split a map into rectangles (r0, r1, c0, c1, step) of equal availability."""
    rects: List[list] = []
    open_: Dict[tuple, list] = {}
    h, w = avail.shape
    for r in range(h):
        row = avail[r]
        cuts = np.flatnonzero(np.diff(row)) + 1
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [w]))
        now: Dict[tuple, list] = {}
        for c0, c1 in zip(starts.tolist(), ends.tolist()):
            key = (c0, c1, int(row[c0]))
            rect = open_.get(key)
            if rect is None:
                rect = [r, r + 1, c0, c1, key[2]]
                rects.append(rect)
            else:
                rect[1] = r + 1
            now[key] = rect
        open_ = now
    return [tuple(r) for r in rects]


@dataclass(frozen=True)
class Schedule:
    """What the fast sampler computes at each step, and where each cache keeps its margins."""

    steps: Tuple[Tuple[Tuple[int, int, int, int, int], ...], ...]  # step -> ((node, r0, r1, c0, c1), ...)
    margins: Tuple[Tuple[int, int, int, int], ...]  # node -> (top, bottom, left, right) zero margin
    live: Tuple[bool, ...]


@functools.lru_cache(maxsize=32)
def schedule(sig: Tuple[tuple, ...], output: int) -> Schedule:
    """The fast sampler's plan for a recorded network (``sig`` = its node signatures)."""
    height, width = sig[0][2]
    n = len(sig)
    live = [False] * n
    live[output] = True
    for i in range(n - 1, -1, -1):
        if live[i]:
            for j in sig[i][1]:
                live[j] = True
    maps = availability(sig, height, width)
    steps_total = height * width
    out_av = maps[output]
    late = out_av > np.arange(steps_total).reshape(height, width)
    if out_av.shape != (height, width) or late.any():
        r, c = np.argwhere(late)[0] if late.any() else (0, 0)
        raise RuntimeError(
            f"the network is not autoregressive: its output at pixel ({r}, {c}) depends on that pixel or later ones"
        )
    margins = [[0, 0, 0, 0] for _ in range(n)]
    for kind, inputs, _size, geom in sig:
        if kind == "conv":
            _kh, _kw, _s, pl, pr, pt, pb = geom
            m = margins[inputs[0]]
            m[0], m[1], m[2], m[3] = max(m[0], pt), max(m[1], pb), max(m[2], pl), max(m[3], pr)
        elif kind == "shift":
            m = margins[inputs[0]]
            m[0], m[2] = max(m[0], geom[0]), max(m[2], geom[1])
    per_step: List[List[tuple]] = [[] for _ in range(steps_total)]
    for i in range(1, n):
        if not live[i]:
            continue
        for r0, r1, c0, c1, step in _rectangles(maps[i]):
            if step < steps_total:  # later positions depend on the last pixel: never needed
                per_step[step].append((i, r0, r1, c0, c1))
    return Schedule(tuple(tuple(s) for s in per_step), tuple(tuple(m) for m in margins), tuple(live))


# --------------------------------------------------------------------------------------------
# the two samplers
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_naive(decoder, z: torch.Tensor, uniforms: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
    """One full network pass per pixel. z (B, D); uniforms (B, U, H, W) -> x (B, C, H, W).

    ``rows``: stop after that many rows (the rest stays 0); for benchmarks.
    """
    c, h, w = decoder.spec.shape
    x = torch.zeros((z.shape[0], c, h, w), dtype=z.dtype, device=z.device)
    todo = h if rows is None else rows
    for r in range(todo):
        for col in range(w):
            out = decoder.network(TorchOps, x, z, False)
            x[:, :, r, col] = decoder.sample_pixel(out[:, :, r, col].contiguous(), uniforms[:, :, r, col].contiguous())
        infovae.progress.advance((r + 1) * w, todo * w)  # pixels done, per finished row
    return x


def _single_position(core: Callable) -> Callable:
    """``core`` (a convolution over a window that yields one output position) as a matrix product."""
    module = core.__self__ if hasattr(core, "__self__") else core
    weight = module.weight.reshape(module.weight.shape[0], -1)
    bias = module.bias

    def linear(window: torch.Tensor) -> torch.Tensor:
        return F.linear(window.reshape(window.shape[0], -1), weight, bias)[:, :, None, None]

    return linear


def _step_function(index: int, node: Node, rect, bufs, margins, single: Dict[int, Callable]) -> Callable[[], None]:
    """A closure computing node ``index`` on output rectangle ``rect`` into its cache.

    ``single`` caches the one-position (matrix product) form of each conv node."""
    r0, r1, c0, c1 = rect
    out = bufs[index]
    mt, _, ml, _ = margins[index]
    target = out[:, :, r0 + mt : r1 + mt, c0 + ml : c1 + ml]

    def at_rect(i: int) -> torch.Tensor:
        t, _, l, _ = margins[i]
        return bufs[i][:, :, r0 + t : r1 + t, c0 + l : c1 + l]

    extras = [at_rect(i) for i in node.inputs[1:]]
    post = node.post
    if node.kind == "pointwise":
        fn, ins = node.fn, [at_rect(i) for i in node.inputs]
        return lambda: target.copy_(fn(*ins))
    src = node.inputs[0]
    t, _, l, _ = margins[src]
    if node.kind == "conv":
        kh, kw, s, pl, _pr, pt, _pb = node.geom
        window = bufs[src][:, :, r0 * s - pt + t : (r1 - 1) * s - pt + kh + t, c0 * s - pl + l : (c1 - 1) * s - pl + kw + l]
        core, pre = node.module, node.pre
        if (r1 - r0, c1 - c0) == (1, 1):  # one position: a matrix product is much cheaper than a conv call
            if index not in single:
                single[index] = _single_position(core)
            core = single[index]
        if pre is None and post is None:
            return lambda: target.copy_(core(window))
        if post is None:
            return lambda: target.copy_(core(pre(window)))
        if pre is None:
            return lambda: target.copy_(post(core(window), *extras))
        return lambda: target.copy_(post(core(pre(window)), *extras))
    if node.kind == "deconv":
        kh, kw, s, cl = node.geom
        h, w = bufs[src].shape[-2] - t - margins[src][1], bufs[src].shape[-1] - l - margins[src][3]
        i0, i1 = max(0, -((kh - 1 - r0) // s)), min(h, (r1 - 1) // s + 1)
        j0, j1 = max(0, -((kw - 1 - c0 - cl) // s)), min(w, (c1 - 1 + cl) // s + 1)
        window = bufs[src][:, :, i0 + t : i1 + t, j0 + l : j1 + l]
        rr, cc = r0 - s * i0, c0 + cl - s * j0
        core = node.module
        if post is None:
            return lambda: target.copy_(core(window)[:, :, rr : rr + r1 - r0, cc : cc + c1 - c0])
        return lambda: target.copy_(post(core(window)[:, :, rr : rr + r1 - r0, cc : cc + c1 - c0], *extras))
    if node.kind == "shift":
        down, right = node.geom
        window = bufs[src][:, :, r0 - down + t : r1 - down + t, c0 - right + l : c1 - right + l]
        if post is None:
            return lambda: target.copy_(window)
        return lambda: target.copy_(post(window, *extras))
    raise RuntimeError(f"unknown node kind {node.kind!r}")


@torch.no_grad()
def run_fast(decoder, z: torch.Tensor, pixel: Callable[[int, int, torch.Tensor], torch.Tensor], rows: Optional[int] = None) -> torch.Tensor:
    """The cached evaluation loop: each layer computes each position once.

    At step r * W + c the layers compute what became available, then
    ``pixel(r, c, params)`` receives the network output at (r, c) as a contiguous
    (B, P) tensor and returns the (B, C) values of that pixel, which enter the caches.
    Returns the canvas (B, C, H, W); with ``rows`` it stops after that many rows.
    """
    c, h, w = decoder.spec.shape
    nodes, output = record(decoder, z)
    plan = schedule(tuple(n.signature() for n in nodes), output)
    b = z.shape[0]
    bufs: List[Optional[torch.Tensor]] = []
    for node, (mt, mb, ml, mr), live in zip(nodes, plan.margins, plan.live):
        hh, ww = node.size
        bufs.append(z.new_zeros((b, node.channels, hh + mt + mb, ww + ml + mr)) if live else None)
    todo_steps = plan.steps if rows is None else plan.steps[: rows * w]
    single: Dict[int, Callable] = {}
    steps = [[_step_function(i, nodes[i], rect, bufs, plan.margins, single) for i, *rect in entries] for entries in todo_steps]
    mt, _, ml, _ = plan.margins[0]
    ot, _, ol, _ = plan.margins[output]
    canvas, params = bufs[0], bufs[output]
    for step, todo in enumerate(steps):
        for compute in todo:
            compute()
        r, col = divmod(step, w)
        canvas[:, :, r + mt, col + ml] = pixel(r, col, params[:, :, r + ot, col + ol].contiguous())
        if col == w - 1:
            infovae.progress.advance(step + 1, len(steps))  # pixels done, per finished row
    return canvas[:, :, mt : mt + h, ml : ml + w].clone()


def sample_fast(decoder, z: torch.Tensor, uniforms: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
    """The cached sampler. Same arguments and result as ``sample_naive``."""
    return run_fast(decoder, z, lambda r, c, params: decoder.sample_pixel(params, uniforms[:, :, r, c].contiguous()), rows)


def fast_outputs(decoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Network outputs (B, P, H, W) for a given image x, computed the fast sampler's way.

    With teacher forcing the fast loop must reproduce ``decoder(x, z)`` (eval mode) up to
    rounding: a check of the caches that does not go through sampling.
    """
    outs: Dict[Tuple[int, int], torch.Tensor] = {}

    def pixel(r: int, c: int, params: torch.Tensor) -> torch.Tensor:
        outs[r, c] = params.clone()
        return x[:, :, r, c]

    run_fast(decoder, z, pixel)
    _, h, w = decoder.spec.shape
    return torch.stack([torch.stack([outs[r, c] for c in range(w)], -1) for r in range(h)], -2)


def compare_samplers(decoder, z: torch.Tensor, generator_seed: int = 0) -> Dict[str, float]:
    """Draw with both samplers from the same seed; report agreement (used by tests and the benchmark).

    Returns the fraction of subpixels and of images that agree, and whether all do.
    """
    device = z.device
    xs = []
    for fast in (False, True):
        g = torch.Generator(device=device).manual_seed(generator_seed)
        xs.append(decoder.sample(z, generator=g, fast=fast))
    same = xs[0] == xs[1]
    return {
        "subpixels_equal": float(same.float().mean()),
        "images_equal": float(same.flatten(1).all(1).float().mean()),
        "identical": bool(same.all()),
    }
