"""Ancestral sampling for the autoregressive decoders: the naive loop and the fast cached one.

Naive: for every pixel in raster order, one full network pass over the whole canvas,
then the pixel is drawn from the parameters at its position.

Fast (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models"): the network, written against the ``ops`` primitives of
``autoregressive.py``, is recorded once as a graph of layers. For every layer output
position we know the first step at which it can be computed (its *availability*: the
latest pixel it depends on, found by max-pooling availability maps through the same
geometry); every layer keeps a cache of its outputs, and at each step a layer computes
the positions the schedule puts there, from windows of its inputs' caches. Over a
whole image every layer computes every needed position once, exactly one network pass
in total, instead of one pass per pixel. Strided and transposed layers of PixelCNN++
need no special case: their positions simply become available every second (fourth)
row and column.

The schedule (``schedule``, cached per network shape) places every position between its
availability and the first step that reads it, and groups the positions of a row into
segments as long as those bounds allow: a row that depends only on the rows above (the
``u`` stream of PixelCNN++, PixelCNN's vertical stack) is one product at the start of
that row instead of one per pixel; the ``ul`` stream, which needs the pixel just drawn,
stays one position per step. From the last step reading each position it sizes every
cache as a ring buffer of a few rows where that is safe (row r in slot r mod R; the
padding rows above the image are the slots not written yet), so the caches stay in
the processor's cache, and it numbers the step closures by what they touch (node,
storage slots, columns): steps of different rows that touch the same slots share one
closure, built once per draw (1459 closures for 14898 entries at 32x32).

Per-step cost (what makes it fast in practice, since a step computes a handful of
positions and Python/dispatch overhead dominates): caches are channels-last, so a
window row is one strided matrix; a convolution's pre-activation (``concat_elu``,
``elu``, ``relu``) is cached once per written position instead of being recomputed for
every window that reads it; a single output position is kh matrix products read
straight from the cache rows, with the short-cut 1x1 layer of ``ops.conv(side=...)``
split over its inputs' pre-activated caches and the per-example ``bias`` folded into
the product's bias, and a gated residual written straight into its cache; a row of n
positions is one product of its windows copied side by side into a per-layer buffer;
a transposed convolution fed by one input position is one product; every view is made
by one ``as_strided`` call; cyclic garbage collection is off while the schedule and
the step closures are built and run. Other rectangles use the layers' own convolutions
on windows.

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
import gc
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import infovae

from .autoregressive import ShiftedConv2d, ShiftedDeconv2d, TorchOps, concat_elu, gated_residual


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
    side_count: int = 0  # the last side_count inputs are the short-cut's (conv nodes)
    side_module: Optional[nn.Module] = None
    side_pre: Optional[Callable] = None
    bias: Optional[torch.Tensor] = None  # (B, Cout, 1, 1) per-example bias (conv nodes)

    @property
    def extras(self) -> Tuple[int, ...]:
        return self.inputs[1 : len(self.inputs) - self.side_count]

    @property
    def side_inputs(self) -> Tuple[int, ...]:
        return self.inputs[len(self.inputs) - self.side_count :]

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

    def conv(self, module, x: Handle, pre=None, post=None, extras: Sequence[Handle] = (), channels=None,
             side=None, bias=None) -> Handle:
        geom, core = _conv_geometry(module)
        kh, kw, s, pl, pr, pt, pb = geom
        h, w = x.size
        size = ((h + pt + pb - kh) // s + 1, (w + pl + pr - kw) // s + 1)
        side_module, side_inputs, side_pre = side if side is not None else (None, (), None)
        if side_module is not None and not (isinstance(side_module, nn.Conv2d) and side_module.kernel_size == (1, 1)
                                            and side_module.stride == (1, 1) and side_module.padding == (0, 0)):
            raise TypeError(f"ops.conv's side inputs go through a 1x1 nn.Conv2d, got {side_module!r}")
        node = Node("conv", (x.index, *(e.index for e in extras), *(i.index for i in side_inputs)),
                    channels or module.out_channels, size, geom, core, pre, post, side_count=len(side_inputs),
                    side_module=side_module, side_pre=side_pre, bias=bias)
        return self._add(node, (*extras, *side_inputs))

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


_NEVER = int(np.iinfo(np.int64).max)  # a Python int (compared with list items); "never computed" / "never read" in step maps


@dataclass(frozen=True)
class Schedule:
    """What the fast sampler computes at each step, and how each cache is laid out.

    ``rings[i]``: 0 when node i's caches hold every row (plus the ``margins`` rows), else the number R of
    rows they hold: output row r lives in slot r mod R (a ring buffer; the zero padding rows above the
    image are the slots not written yet), chosen so that no row is overwritten before its last read."""

    steps: Tuple[Tuple[Tuple[int, int, int, int, int], ...], ...]  # step -> ((node, r0, r1, c0, c1), ...)
    margins: Tuple[Tuple[int, int, int, int], ...]  # node -> (top, bottom, left, right) zero margin
    live: Tuple[bool, ...]
    output: int
    rings: Tuple[int, ...] = ()
    programs: Tuple[Tuple[int, ...], ...] = ()  # step -> the closure number of each of its entries
    closures: Tuple[Tuple[int, Tuple[int, int, int, int]], ...] = ()  # closure number -> (node, rect) to build it from


def reads(sig: Tuple[tuple, ...], index: int, rect: Tuple[int, int, int, int]) -> List[Tuple[int, int, int, int, int, bool]]:
    """The cache rectangles that computing node ``index`` on output rectangle ``rect`` = (r0, r1, c0, c1)
    reads: (input node, rows a..b, columns ca..cb, whether it is read as one multi-row view), rows and
    columns in the input's output coordinates (negative ones are its zero margins). The bounds may also
    be int64 arrays of many rectangles (the schedule's bookkeeping); the results are then arrays too."""
    kind, inputs, _size, geom = sig[index]
    r0, r1, c0, c1 = rect
    if kind == "pointwise":
        return [(i, r0, r1, c0, c1, r1 - r0 > 1) for i in inputs]
    at_outputs = [(i, r0, r1, c0, c1, r1 - r0 > 1) for i in inputs[1:]]
    src = inputs[0]
    if kind == "conv":
        kh, kw, s, pl, _pr, pt, _pb = geom
        a, b = r0 * s - pt, (r1 - 1) * s - pt + kh
        return [(src, a, b, c0 * s - pl, (c1 - 1) * s - pl + kw, r1 - r0 > 1)] + at_outputs
    if kind == "deconv":
        kh, kw, s, cl = geom
        h, w = sig[src][2]
        if isinstance(r0, np.ndarray):
            i0, i1 = np.maximum(0, -((kh - 1 - r0) // s)), np.minimum(h, (r1 - 1) // s + 1)
            j0, j1 = np.maximum(0, -((kw - 1 - c0 - cl) // s)), np.minimum(w, (c1 - 1 + cl) // s + 1)
        else:
            i0, i1 = max(0, -((kh - 1 - r0) // s)), min(h, (r1 - 1) // s + 1)
            j0, j1 = max(0, -((kw - 1 - c0 - cl) // s)), min(w, (c1 - 1 + cl) // s + 1)
        return [(src, i0, i1, j0, j1, i1 - i0 > 1)] + at_outputs
    down, right = geom  # shift
    return [(src, r0 - down, r1 - down, c0 - right, c1 - right, r1 - r0 > 1)] + at_outputs


def _segments(avail: np.ndarray, need: np.ndarray) -> List[Tuple[int, int, int, int, int]]:
    """Row segments (r, r + 1, c0, c1, step) covering the needed positions (need < never) of one node,
    each as long as possible while computable in one go: step = the latest availability in it, which must
    not pass the earliest step that needs one of its positions."""
    out = []
    for r, (a_row, need_row) in enumerate(zip(avail.tolist(), need.tolist())):
        if _NEVER not in need_row and max(a_row) <= min(need_row):  # the whole row in one go
            out.append((r, r + 1, 0, len(a_row), max(a_row)))
            continue
        start = None
        for c, (a, nd) in enumerate(zip(a_row, need_row)):
            if nd == _NEVER:
                continue
            if start is not None and c == end:  # extend while the latest availability <= the earliest need
                new_hi, new_lo = (hi if hi >= a else a), (lo if lo <= nd else nd)
                if new_hi <= new_lo:
                    hi, lo, end = new_hi, new_lo, c + 1
                    continue
            if start is not None:
                out.append((r, r + 1, start, end, hi))
            start, end, hi, lo = c, c + 1, a, nd
        if start is not None:
            out.append((r, r + 1, start, end, hi))
    return out


def _cells(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray, shape: Tuple[int, int]):
    """Every cell of the rectangles [a, b) x [ca, cb) (int64 arrays) clipped to [0, h) x [0, w): its row,
    its column and the index of its rectangle."""
    h, w = shape
    a, b, ca, cb = np.clip(a, 0, h), np.clip(b, 0, h), np.clip(ca, 0, w), np.clip(cb, 0, w)
    nr, nc = np.maximum(b - a, 0), np.maximum(cb - ca, 0)
    count = nr * nc
    which = np.repeat(np.arange(len(a)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return a[which] + local // nc[which], ca[which] + local % nc[which], which


def _ring_rows(height: int, margin_top: int, margin_bottom: int, written: np.ndarray, last_read: np.ndarray,
               views: set) -> int:
    """The fewest rows R (a power of two below ``height``) that a node's caches can keep as a ring, or 0.

    ``written`` (H, W): the step writing each position (never: not computed); ``last_read`` (top + H, W):
    the last step reading each position, rows -top..H-1 (the zero padding rows first). Slot r mod R is
    next written by row r + R, which must come after the last read of row r (a write at the step of a
    read comes first: the writer is earlier in the step). ``views``: the (first, end) row ranges read or
    written as one multi-row view, which must not wrap around the ring."""
    if margin_bottom:  # rows below the image would alias rows above
        return 0
    rows = 1
    while rows < height:
        first = np.arange(-margin_top, height - rows)  # rows whose slot row + R rewrites
        keep = first + rows >= 0  # padding rows sharing a slot are both zero
        ok = bool((last_read[first[keep] + margin_top] < written[first[keep] + rows]).all())
        if ok and all((a % rows) + (b - a) <= rows for a, b in views):
            return rows
        rows *= 2
    return 0


@functools.lru_cache(maxsize=32)
def schedule(sig: Tuple[tuple, ...], output: int, whole_windows: frozenset = frozenset()) -> Schedule:
    """The fast sampler's plan for a recorded network (``sig`` = its node signatures).

    Every needed position is computed once, at a step between its availability and the first step
    that reads it; within those bounds positions of a row are grouped into as long segments as possible
    (a row that depends only on the rows above, as in PixelCNN++'s ``u`` stream, is one product at the
    start of the row instead of one per pixel). ``whole_windows``: conv nodes that read their input
    window as one multi-row view (the others read it row by row), which constrains the ring buffers.
    """
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
    per_step, written, last, views = _place(sig, maps, live, output, margins, whole_windows)
    rings = [_ring_rows(sig[i][2][0], margins[i][0], margins[i][1], written[i], last[i], views[i]) if live[i] else 0
             for i in range(n)]
    steps = tuple(tuple(sorted(s)) for s in per_step)
    programs, closures = _number_closures(sig, steps, rings, margins)
    return Schedule(steps, tuple(tuple(m) for m in margins), tuple(live), output, tuple(rings), programs, closures)


def _number_closures(sig: Tuple[tuple, ...], steps, rings: Sequence[int], margins: Sequence[Sequence[int]]):
    """Number the entries of all steps by their closure keys (``_entry_keys``), in order of first use:
    (step -> closure numbers of its entries, closure number -> (node, rect) of its first entry)."""
    by_node: Dict[int, List[Tuple[int, int, int, int]]] = {}
    for entries in steps:
        for i, *rect in entries:
            by_node.setdefault(i, []).append(tuple(rect))
    keys = {}
    for i, rects in by_node.items():
        keys.update(zip(((i, *rect) for rect in rects), _entry_keys(sig, rings, margins, i, rects)))
    numbers: Dict[tuple, int] = {}
    closures: List[Tuple[int, Tuple[int, int, int, int]]] = []
    programs = []
    for entries in steps:
        ids = []
        for entry in entries:
            key = keys[entry]
            if key not in numbers:
                numbers[key] = len(closures)
                closures.append((entry[0], tuple(entry[1:])))
            ids.append(numbers[key])
        programs.append(tuple(ids))
    return tuple(programs), tuple(closures)


def slot(rings: Sequence[int], margins: Sequence[Sequence[int]], i: int, r):
    """The storage row of node i's output row r (negative r: its zero padding rows; an int or an int64
    array of rows); see ``Schedule``."""
    ring = rings[i]
    return r % ring if ring else r + margins[i][0]


def _entry_keys(sig: Tuple[tuple, ...], rings, margins, index: int, rects: List[Tuple[int, int, int, int]]) -> List[tuple]:
    """What the step closure of node ``index`` on each rectangle depends on: the storage slots and columns
    of what it writes and reads (and a transposed convolution's crop). Entries of different rows with
    equal keys (ring buffers) share one closure."""
    r0, r1, c0, c1 = (np.array(column, dtype=np.int64) for column in zip(*rects))
    parts = [slot(rings, margins, index, r0), r1 - r0, c0, c1]
    got = reads(sig, index, (r0, r1, c0, c1))
    for j, a, b, ca, cb, _multi in got:
        parts += [slot(rings, margins, j, a), b - a, ca, cb]
    if sig[index][0] == "deconv":
        parts.append(r0 - sig[index][3][2] * got[0][1])
    return [(index, *row) for row in np.stack(parts, 1).tolist()]


def _place(sig: Tuple[tuple, ...], maps: List[np.ndarray], live: List[bool], output: int, margins: List[List[int]],
           whole_windows: frozenset):
    """Where everything goes: the step lists (step -> [(node, r0, r1, c0, c1)]) and, per node, the (h, w)
    step writing each position, the (top + h, w) last step reading each position (rows from -top, the
    zero padding; -1: never read) and the (first, end) row ranges used as one multi-row view.

    Nodes are placed from the output back: a node's positions are needed at the earliest step of the
    entries reading them (the output's at their own pixel step)."""
    height, width = sig[0][2]
    n = len(sig)
    need = [np.full(sig[i][2], _NEVER, dtype=np.int64) for i in range(n)]
    need[output] = np.arange(height * width, dtype=np.int64).reshape(height, width)
    last = [np.full((margins[i][0] + sig[i][2][0], sig[i][2][1]), -1, dtype=np.int64) for i in range(n)]
    top = margins[output][0]
    last[output][top:] = need[output]  # the pixel draw reads the output at its own step
    views: List[set] = [set() for _ in range(n)]
    per_step: List[List[tuple]] = [[] for _ in range(height * width)]
    written: List[Optional[np.ndarray]] = [None] * n
    written[0] = maps[0]  # pixel r * W + c is in the canvas from the next step on
    for i in range(n - 1, 0, -1):
        if not live[i]:
            continue
        avail, wanted = maps[i], need[i]
        if (avail[wanted != _NEVER] > wanted[wanted != _NEVER]).any():
            raise RuntimeError(f"node {i} is needed before it can be computed")
        if sig[i][0] == "deconv":  # blocks of equal availability, computed as soon as available
            rects = [r for r in _rectangles(np.where(wanted != _NEVER, avail, _NEVER)) if r[4] != _NEVER]
        else:
            rects = _segments(avail, wanted)
        steps = np.full(sig[i][2], _NEVER, dtype=np.int64)
        written[i] = steps
        if not rects:  # nothing of it is needed (e.g. rows above the first pixel's only in a 1-row image)
            continue
        for r0, r1, c0, c1, step in rects:
            per_step[step].append((i, r0, r1, c0, c1))
            if r1 - r0 > 1:
                views[i].add((r0, r1))
        r0, r1, c0, c1, step = (np.array(column, dtype=np.int64) for column in zip(*rects))
        rows, cols, which = _cells(r0, r1, c0, c1, sig[i][2])
        steps[rows, cols] = step[which]
        for k, (j, a, b, ca, cb, multi) in enumerate(reads(sig, i, (r0, r1, c0, c1))):
            whole = np.ones_like(multi) if k == 0 and i in whole_windows else multi
            views[j].update(zip(a[whole].tolist(), b[whole].tolist()))
            rows, cols, which = _cells(a, b, ca, cb, sig[j][2])
            np.minimum.at(need[j], (rows, cols), step[which])
            top = margins[j][0]
            rows, cols, which = _cells(a + top, b + top, ca, cb, last[j].shape)
            np.maximum.at(last[j], (rows, cols), step[which])
    return per_step, written, last, views


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


def _pre_writer(pre: Callable) -> Callable[[torch.Tensor, torch.Tensor], Callable[[torch.Tensor], None]]:
    """``prepare(out)`` for a (B, C', h, w) view of a pre-activation cache returns ``write(x)``, which
    writes pre(x) there in place (no temporaries for the known activations)."""
    if pre is concat_elu:
        def prepare(out: torch.Tensor) -> Callable[[torch.Tensor], None]:
            halves, signs = _concat_elu_halves(out)

            def write(x: torch.Tensor) -> None:  # [elu(x), elu(-x)]: one product with the signs, one elu
                torch.mul(x.unsqueeze(1), signs, out=halves)
                F.elu_(halves)

            return write
        return prepare
    if pre is F.elu:
        return lambda out: (lambda x: torch._C._nn.elu(x, out=out))
    if pre is F.relu:
        return lambda out: (lambda x: torch.clamp(x, min=0, out=out))
    return lambda out: (lambda x: out.copy_(pre(x)))


def _concat_elu_halves(out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A (B, 2C, h, w) concat_elu cache view as (B, 2, C, h, w) halves, and the (2, 1, 1, 1) signs [1, -1]."""
    b, c2, hh, ww = out.shape
    sb, sc, sh, sw = out.stride()
    c = c2 // 2
    halves = out.as_strided((b, 2, c, hh, ww), (sb, c * sc, sc, sh, sw), out.storage_offset())
    return halves, out.new_tensor([1.0, -1.0]).reshape(2, 1, 1, 1)


def _fixed_writer(pre: Callable, out: torch.Tensor, x: torch.Tensor) -> Callable[[], None]:
    """``write()`` putting pre(x) into the pre-activation cache view ``out``, for an x (B, C, h, w) that is
    always the same tensor (a node's scratch or cache view): its views are made once, here."""
    if pre is concat_elu:
        halves, signs = _concat_elu_halves(out)
        x1 = x.unsqueeze(1)

        def write() -> None:
            torch.mul(x1, signs, out=halves)
            F.elu_(halves)

        return write
    write = _pre_writer(pre)(out)
    return lambda: write(x)


_SPLITTABLE = (concat_elu, F.elu, F.relu)  # side pre-activations whose 1x1 layer splits over the inputs


def _side_weights(node: Node, channels: Sequence[int]) -> List[torch.Tensor]:
    """The side 1x1 layer's weight (Cout, S') as one (S'_j, Cout) matrix per side input j, acting on
    that input's (pre-activated) cache row: nin(pre(cat(inputs))) = sum_j cache_j @ W_j.
    concat_elu(cat(a_1..a_n)) orders channels [a_1..a_n, -a_1..-a_n] while each cache holds [a_j, -a_j]."""
    weight = node.side_module.weight.detach().flatten(1)
    total, out, off = sum(channels), [], 0
    for c in channels:
        if node.side_pre is concat_elu:
            w = torch.cat((weight[:, off : off + c], weight[:, total + off : total + off + c]), dim=1)
        else:
            w = weight[:, off : off + c]
        out.append(w.t().contiguous())
        off += c
    return out


def _row_weights(core: Callable) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
    """A convolution's weight (Cout, Cin, kh, kw) as kh matrices (kw * Cin, Cout) whose rows follow the
    (column, channel) order of a channels-last window row, and its bias. ``core``: the module or its
    bound ``core`` method."""
    module = getattr(core, "__self__", core)
    weight = module.weight.detach()
    return [weight[:, :, i].permute(0, 2, 1).reshape(weight.shape[0], -1).t().contiguous()
            for i in range(weight.shape[2])], (None if module.bias is None else module.bias.detach())


class _Caches:
    """Every live node's outputs so far, stored channels-last as (B, rows, W + margins, C) and seen by the
    network's callables as (B, C, h, w) views; plus, for every (node, pre-activation) pair read by a
    convolution, a cache of the pre-activated outputs, written when the node's positions are (``pre``
    maps 0 to 0, so the zero margins stay right). Windows are then read without copies or recomputation,
    and every view is made by one ``as_strided`` call (building the step closures is per-pixel work too).

    ``rows`` is H + top + bottom margins, or, for a node the schedule keeps as a ring of R rows, R: row r
    is slot r mod R and the padding rows above the image are slots not written yet. Views take rows and
    columns in output coordinates; ``slot(i, r)`` says where row r is, so steps reading the same slots
    can share their closures."""

    def __init__(self, nodes: List[Node], plan: Schedule, batch: int, like: torch.Tensor):
        self.margins = plan.margins
        self.sizes = [node.size for node in nodes]
        self.rings = plan.rings or (0,) * len(nodes)
        self._layouts: Dict[tuple, tuple] = {}
        self.stores: List[Optional[torch.Tensor]] = []
        for node, (mt, mb, ml, mr), ring, live in zip(nodes, plan.margins, self.rings, plan.live):
            hh, ww = node.size
            rows = ring or hh + mt + mb
            self.stores.append(like.new_zeros((batch, rows, ww + ml + mr, node.channels)) if live else None)
        self.pre: Dict[Tuple[int, Callable], torch.Tensor] = {}
        self.pre_users: Dict[int, List[Tuple[Callable, Callable]]] = {}  # node -> [(pre, its writer)]
        # raw outputs are needed unless a node is read only as a convolution's input through its ``pre``
        self.raw_needed = [i == 0 or i == plan.output for i in range(len(nodes))]
        for node, live in zip(nodes, plan.live):
            if live:
                through_pre = node.kind == "conv" and node.pre is not None
                for j, i in enumerate(node.inputs):
                    if not (j == 0 and through_pre):
                        self.raw_needed[i] = True
        wanted = []
        for node, live in zip(nodes, plan.live):
            if live and node.kind == "conv":
                if node.pre is not None:
                    wanted.append((node.inputs[0], node.pre))
                if node.side_pre is not None and node.side_pre in _SPLITTABLE:
                    wanted += [(i, node.side_pre) for i in node.side_inputs]
        for src, pre in wanted:
            if (src, pre) not in self.pre:
                probe = pre(like.new_zeros((1, nodes[src].channels, 1, 1)))
                b, hh, ww, _ = self.stores[src].shape
                self.pre[src, pre] = like.new_zeros((b, hh, ww, probe.shape[1]))
                self.pre_users.setdefault(src, []).append((pre, _pre_writer(pre)))

    def store(self, i: int, pre: Optional[Callable] = None) -> torch.Tensor:
        return self.stores[i] if pre is None else self.pre[i, pre]

    def slot(self, i: int, r: int) -> int:
        """The storage row of node i's output row r (negative r: its zero padding rows)."""
        return slot(self.rings, self.margins, i, r)

    def _layout(self, i: int, pre: Optional[Callable]):
        """(store, batch, batch stride, row stride, channels, offset of column 0) of a cache, memoised: views
        are made for every step, so this bookkeeping is per-pixel work."""
        key = (i, pre)
        got = self._layouts.get(key)
        if got is None:
            buf = self.store(i, pre)
            _, _, ww, ch = buf.shape
            got = self._layouts[key] = (buf, buf.shape[0], buf.stride(0), ww * ch, ch, self.margins[i][2] * ch)
        return got

    def _offset(self, i: int, r0: int, r1: int, sr: int) -> int:
        """Storage offset of row r0 of node i, checking that rows r0..r1-1 do not wrap around a ring."""
        slot, ring = self.slot(i, r0), self.rings[i]
        if ring and slot + (r1 - r0) > ring:
            raise RuntimeError(f"rows {r0}..{r1 - 1} of node {i} wrap around its ring of {ring} rows")
        return slot * sr

    def at(self, i: int, r0: int, r1: int, c0: int, c1: int, pre: Optional[Callable] = None) -> torch.Tensor:
        """(B, C, r1 - r0, c1 - c0) view of node i's cache (its pre-activated one with ``pre``); rows and
        columns in output coordinates, negative ones reaching into the zero margins."""
        buf, b, sb, sr, ch, base = self._layout(i, pre)
        return buf.as_strided((b, ch, r1 - r0, c1 - c0), (sb, 1, sr, ch), base + self._offset(i, r0, r1, sr) + c0 * ch)

    def windows(self, i: int, r: int, c0: int, n: int, k: int, stride: int, pre: Optional[Callable] = None) -> torch.Tensor:
        """(B, n, k * C) overlapping view: entry j is the row segment of k columns from c0 + j * stride."""
        buf, b, sb, sr, ch, base = self._layout(i, pre)
        return buf.as_strided((b, n, k * ch), (sb, stride * ch, 1), base + self._offset(i, r, r + 1, sr) + c0 * ch)

    def row(self, i: int, r: int, c0: int, c1: int, pre: Optional[Callable] = None) -> torch.Tensor:
        """(B, (c1 - c0) * C) view of one cache row segment, (column, channel) order."""
        buf, b, sb, sr, ch, base = self._layout(i, pre)
        return buf.as_strided((b, (c1 - c0) * ch), (sb, 1), base + self._offset(i, r, r + 1, sr) + c0 * ch)


def _conv_matrices(node: Node, caches: "_Caches", per_node: dict, index: int):
    """A conv node's kh row matrices, its side matrices and its total bias ((Cout,) or per example (B, Cout):
    the layer's, the side layer's and ``node.bias`` summed), made once per node."""
    if index not in per_node:
        rows_w, bias = _row_weights(node.module)
        side_w = _side_weights(node, [caches.stores[i].shape[3] for i in node.side_inputs]) if node.side_module is not None else []
        for extra in ((node.side_module.bias,) if node.side_module is not None else ()) + (node.bias,):
            if extra is not None:
                extra = extra.detach().reshape(-1, rows_w[0].shape[1]).squeeze(0)
                bias = extra if bias is None else bias + extra
        per_node[index] = (rows_w, side_w, bias)
    return per_node[index]


def _row_buffers(index: int, n: int, mats: List[torch.Tensor], bias: Optional[torch.Tensor], per_node: dict):
    """Scratch for a conv node's products on rows of n positions, shared by its closures: the (B, n, K)
    buffer of the windows side by side (K = the rows of ``mats`` together), its (B * n, K) view, the
    (B * n, Cout) result, the bias as (Cout,) or per example repeated over the row (B * n, Cout) (or
    None), and the result as a (B, Cout, 1, n) view; the stacked (K, Cout) weight goes to
    ``per_node["rowmat", index]``."""
    if ("rowmat", index) not in per_node:
        per_node["rowmat", index] = torch.cat(mats, 0).contiguous()
    key = ("rows", index, n)
    if key not in per_node:
        weight = per_node["rowmat", index]
        k, cout = weight.shape
        b = per_node["batch"]
        col = weight.new_zeros((b, n, k))
        acc = weight.new_empty((b * n, cout))
        bias_rows = bias
        if bias is not None and bias.dim() == 2:  # per example: (B, Cout) -> (B * n, Cout)
            bias_rows = bias[:, None, :].expand(b, n, cout).reshape(b * n, cout)
        per_node[key] = (col, col.view(b * n, k), acc, bias_rows, acc.view(b, n, cout).permute(0, 2, 1)[:, :, None, :])
    return per_node[key]


def _sequence(*calls: Callable[[], object]) -> Callable[[], None]:
    """One closure running the given no-argument calls in order."""
    if len(calls) == 1:
        return calls[0]
    if len(calls) == 2:
        first, second = calls

        def run() -> None:
            first()
            second()

        return run

    def run_all() -> None:
        for call in calls:
            call()

    return run_all


def _step_function(index: int, node: Node, rect, caches: _Caches, per_node: Dict[int, tuple]) -> Callable[[], None]:
    """A closure computing node ``index`` on output rectangle ``rect`` into its cache (and the node's
    pre-activated caches). ``per_node`` keeps what a node's closures share (weights, scratch)."""
    r0, r1, c0, c1 = rect
    writers = [prepare(caches.at(index, r0, r1, c0, c1, pre)) for pre, prepare in caches.pre_users.get(index, ())]
    target = caches.at(index, r0, r1, c0, c1) if caches.raw_needed[index] else None
    if target is None and len(writers) == 1:
        put = writers[0]
    else:
        def put(y: torch.Tensor) -> None:
            if target is not None:
                target.copy_(y)
            for write in writers:
                write(y)
    extras = [caches.at(i, r0, r1, c0, c1) for i in (node.extras if node.kind == "conv" else node.inputs[1:])]
    post = node.post
    if node.kind == "pointwise":
        fn, ins = node.fn, [caches.at(i, r0, r1, c0, c1) for i in node.inputs]
        return lambda: put(fn(*ins))
    src = node.inputs[0]
    if node.kind == "conv":
        kh, kw, s, pl, _pr, pt, _pb = node.geom
        splittable = node.side_module is None or node.side_pre is None or node.side_pre in _SPLITTABLE
        if (r1 - r0, c1 - c0) == (1, 1) and splittable:  # one position: matrix products straight from cache rows
            rows_w, side_w, bias = _conv_matrices(node, caches, per_node, index)
            if ("scratch", index) not in per_node:
                scratch = caches.stores[src].new_empty((caches.stores[src].shape[0], rows_w[0].shape[1]))
                per_node["scratch", index] = (scratch, scratch[:, :, None, None])
            scratch, y = per_node["scratch", index]
            pairs = [(caches.row(src, r0 * s - pt + i, c0 * s - pl, c0 * s - pl + kw, node.pre), m)
                     for i, m in enumerate(rows_w)]
            pairs += [(caches.row(i, r0, c0, c0 + 1, node.side_pre), m) for i, m in zip(node.side_inputs, side_w)]
            (a0, m0), rest = pairs[0], pairs[1:]
            if bias is None:
                def product() -> torch.Tensor:
                    torch.mm(a0, m0, out=scratch)
                    for a, m in rest:
                        scratch.addmm_(a, m)
                    return y
            else:
                def product() -> torch.Tensor:
                    torch.addmm(bias, a0, m0, out=scratch)
                    for a, m in rest:
                        scratch.addmm_(a, m)
                    return y
            pre_views = [(pre, caches.at(index, r0, r1, c0, c1, pre)) for pre, _ in caches.pre_users.get(index, ())]
            if post is None:  # the products' scratch is the result: copied to the raw cache, pre-activated
                writes = [_fixed_writer(pre, out, y) for pre, out in pre_views]
                if target is not None:
                    writes.insert(0, functools.partial(target.copy_, y))
                return _sequence(product, *writes)
            if post is gated_residual and len(extras) == 1:  # skip + a * sigmoid(b), written where it is kept
                f = node.channels
                dest = target
                if dest is None:
                    if ("result", index) not in per_node:
                        per_node["result", index] = y[:, :f].clone()
                    dest = per_node["result", index]
                a_half, b_half, skip = y[:, :f], y[:, f:], extras[0]
                writes = [_fixed_writer(pre, out, dest) for pre, out in pre_views]

                def gate() -> None:
                    torch.sigmoid(b_half, out=b_half)
                    torch.addcmul(skip, a_half, b_half, out=dest)

                return _sequence(product, gate, *writes)
            return lambda: put(post(product(), *extras))
        if r1 - r0 == 1 and splittable:  # one row of n positions: the windows side by side, one product
            rows_w, side_w, bias = _conv_matrices(node, caches, per_node, index)
            n = c1 - c0
            col, col2d, acc, bias_rows, result = _row_buffers(index, n, rows_w + side_w, bias, per_node)
            sources = [caches.windows(src, r0 * s - pt + i, c0 * s - pl, n, kw, s, node.pre) for i in range(kh)]
            sources += [caches.windows(i, r0, c0, n, 1, 1, node.side_pre) for i in node.side_inputs]
            copies, offset = [], 0
            for source in sources:  # (B, n, k) window rows into their columns of the (B, n, K) buffer
                copies.append((col[:, :, offset : offset + source.shape[2]], source))
                offset += source.shape[2]
            weight = per_node["rowmat", index]

            def products() -> torch.Tensor:
                for dst, source in copies:
                    dst.copy_(source)
                if bias_rows is None:
                    torch.mm(col2d, weight, out=acc)
                else:
                    torch.addmm(bias_rows, col2d, weight, out=acc)
                return result

            if post is None:
                return lambda: put(products())
            return lambda: put(post(products(), *extras))
        window = caches.at(src, r0 * s - pt, (r1 - 1) * s - pt + kh, c0 * s - pl, (c1 - 1) * s - pl + kw, node.pre)
        side = None
        if node.side_module is not None:
            side = (node.side_module, [caches.at(i, r0, r1, c0, c1) for i in node.side_inputs], node.side_pre)
        core = node.module
        return lambda: put(TorchOps.conv(core, window, None, post, extras, side=side, bias=node.bias))
    if node.kind == "deconv":
        kh, kw, s, cl = node.geom
        h, w = caches.sizes[src]
        i0, i1 = max(0, -((kh - 1 - r0) // s)), min(h, (r1 - 1) // s + 1)
        j0, j1 = max(0, -((kw - 1 - c0 - cl) // s)), min(w, (c1 - 1 + cl) // s + 1)
        window = caches.at(src, i0, i1, j0, j1)
        rr, cc = r0 - s * i0, c0 + cl - s * j0
        core = node.module
        if (i1 - i0, j1 - j0) == (1, 1):  # one input position: the kernel times it, cropped; one product
            if index not in per_node:
                module = core.__self__ if hasattr(core, "__self__") else core
                wd = module.weight.detach()  # (Cin, Cout, kh, kw)
                bias_full = None if module.bias is None else module.bias.detach().repeat_interleave(kh * kw)
                per_node[index] = (wd.reshape(wd.shape[0], -1), bias_full, (wd.shape[1], kh, kw))
            wd, bias_full, shape = per_node[index]
            x_row = caches.row(src, i0, j0, j0 + 1)

            def single() -> torch.Tensor:
                y = torch.mm(x_row, wd) if bias_full is None else torch.addmm(bias_full, x_row, wd)
                return y.view(y.shape[0], *shape)[:, :, rr : rr + r1 - r0, cc : cc + c1 - c0]

            if post is None:
                return lambda: put(single())
            return lambda: put(post(single(), *extras))
        if post is None:
            return lambda: put(core(window)[:, :, rr : rr + r1 - r0, cc : cc + c1 - c0])
        return lambda: put(post(core(window)[:, :, rr : rr + r1 - r0, cc : cc + c1 - c0], *extras))
    if node.kind == "shift":
        down, right = node.geom
        window = caches.at(src, r0 - down, r1 - down, c0 - right, c1 - right)
        if post is None:
            return lambda: put(window)
        return lambda: put(post(window, *extras))
    raise RuntimeError(f"unknown node kind {node.kind!r}")


def _whole_windows(nodes: List[Node]) -> frozenset:
    """Conv nodes whose step closures read their input window as one multi-row view (see ``schedule``)."""
    return frozenset(i for i, node in enumerate(nodes) if node.kind == "conv" and node.side_module is not None
                     and node.side_pre is not None and node.side_pre not in _SPLITTABLE)


@torch.no_grad()
def run_fast(decoder, z: torch.Tensor, pixel: Callable[[int, int, torch.Tensor], torch.Tensor], rows: Optional[int] = None,
             stats: Optional[Dict[str, int]] = None) -> torch.Tensor:
    """The cached evaluation loop: each layer computes each position once.

    At step r * W + c the layers compute what the schedule puts there, then
    ``pixel(r, c, params)`` receives the network output at (r, c) as a contiguous
    (B, P) tensor and returns the (B, C) values of that pixel, which enter the caches.
    Returns the canvas (B, C, H, W); with ``rows`` it stops after that many rows.
    ``stats`` (tests): filled with the numbers of entries run and of step closures built.
    """
    c, h, w = decoder.spec.shape
    collecting = gc.isenabled()
    gc.disable()  # the schedule's tuples, thousands of closures and views: collection passes would walk them all
    try:
        nodes, output = record(decoder, z)
        sig = tuple(n.signature() for n in nodes)
        plan = schedule(sig, output, _whole_windows(nodes))
        caches = _Caches(nodes, plan, z.shape[0], z)
        programs = plan.programs if rows is None else plan.programs[: rows * w]
        per_node: Dict[object, object] = {"batch": z.shape[0]}
        used = sorted({k for ids in programs for k in ids})
        built = dict(zip(used, (_step_function(i, nodes[i], rect, caches, per_node) for i, rect in
                                (plan.closures[k] for k in used))))
        steps = [[built[k] for k in ids] for ids in programs]
        pixel_views: Dict[Tuple[int, int, int], tuple] = {}
        values: List[torch.Tensor] = []
        for step, todo in enumerate(steps):
            for compute in todo:
                compute()
            r, col = divmod(step, w)
            where = (caches.slot(output, r), caches.slot(0, r), col)
            views = pixel_views.get(where)
            if views is None:  # the output row, the canvas row and its pre-activations at these slots
                views = pixel_views[where] = (
                    caches.row(output, r, col, col + 1), caches.row(0, r, col, col + 1),
                    [prepare(caches.at(0, r, r + 1, col, col + 1, pre)) for pre, prepare in caches.pre_users.get(0, ())])
            params, canvas_row, canvas_writers = views
            value = pixel(r, col, params.clone())
            canvas_row.copy_(value)
            for write in canvas_writers:  # a convolution reading x itself through a pre-activation
                write(value[:, :, None, None])
            values.append(value)
            if col == w - 1:
                infovae.progress.advance(step + 1, len(steps))  # pixels done, per finished row
        if stats is not None:
            stats.update(entries=sum(len(t) for t in steps), closures=len(built))
        canvas = z.new_zeros((h * w, z.shape[0], c))  # (pixel, B, C); rows not drawn stay 0
        if values:
            canvas[: len(values)].copy_(torch.stack(values))
        return canvas.view(h, w, z.shape[0], c).permute(2, 3, 0, 1).contiguous()
    finally:
        if collecting:
            gc.enable()


def sample_fast(decoder, z: torch.Tensor, uniforms: torch.Tensor, rows: Optional[int] = None) -> torch.Tensor:
    """The cached sampler. Same arguments and result as ``sample_naive``."""
    _, h, w = decoder.spec.shape
    per_pixel = uniforms.permute(2, 3, 0, 1).reshape(h * w, *uniforms.shape[:2])  # (H * W, B, U), contiguous rows
    return run_fast(decoder, z, lambda r, c, params: decoder.sample_pixel(params, per_pixel[r * w + c]), rows)


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
