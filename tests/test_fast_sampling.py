"""The fast cached sampler (plugins/decoders/fast_sampling.py) against the naive loop and the full network."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import infovae
from infovae import DataSpec
from infovae.plugins.decoders import fast_sampling
from infovae.plugins.decoders.autoregressive import AutoregressiveDecoder, ShiftedConv2d, with_ones
from infovae.plugins.decoders.fast_sampling import availability, fast_outputs, record, schedule


def build(name, spec, latent_dim=3, dtype=torch.float64, seed=0, **options):
    torch.manual_seed(seed)
    return infovae.registry().create("decoders", name, options, spec, latent_dim).to(dtype).eval()


def random_images(spec, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "binary":
        return torch.randint(0, 2, (n, *spec.shape), generator=g).to(dtype)
    return torch.randint(0, 256, (n, *spec.shape), generator=g).to(dtype) / 127.5 - 1


CASES = [
    ("pixelcnn", DataSpec("binary", (1, 7, 9)), {"layers": 3, "channels": 4}),
    ("pixelcnn", DataSpec("gray8", (1, 6, 5)), {"layers": 2, "channels": 4, "kernel_size": 5}),
    ("pixelcnnpp", DataSpec("gray8", (1, 28, 28)), {"nr_filters": 4}),  # 28 -> 14 -> 7: odd coarsest size
    ("pixelcnnpp", DataSpec("rgb8", (3, 8, 12)), {"nr_filters": 4, "nr_resnet": 2}),
]


@pytest.mark.parametrize("name,spec,options", CASES)
def test_teacher_forced_fast_loop_reproduces_the_network(name, spec, options):
    """Feeding a fixed image through the caches gives the full network's outputs at every position."""
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        dec = build(name, spec, dtype=dtype, **options)
        x, z = random_images(spec, 2, dtype=dtype), torch.randn(2, 3, dtype=dtype)
        with torch.no_grad():
            full = dec(x, z)
        torch.testing.assert_close(fast_outputs(dec, x, z), full, rtol=tol, atol=tol)


@pytest.mark.parametrize("name,spec,options", [CASES[0], CASES[1], CASES[3]])
def test_fast_samples_equal_naive_samples_bitwise(name, spec, options):
    dec = build(name, spec, **options)
    z = torch.randn(3, 3, dtype=torch.float64)
    naive = dec.sample(z, generator=torch.Generator().manual_seed(11), fast=False)
    fast = dec.sample(z, generator=torch.Generator().manual_seed(11), fast=True)
    assert torch.equal(naive, fast)


def test_both_samplers_consume_the_same_randomness():
    spec = DataSpec("rgb8", (3, 4, 4))
    dec = build("pixelcnnpp", spec)
    z = torch.randn(2, 3, dtype=torch.float64)
    states = []
    for fast in (False, True):
        g = torch.Generator().manual_seed(0)
        dec.sample(z, generator=g, fast=fast)
        states.append(g.get_state())
    g = torch.Generator().manual_seed(0)
    torch.rand(2, 4, 4, 4, generator=g)  # all uniforms at once: (B, 1 + C, H, W)
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], g.get_state())


def test_partial_draws_are_prefixes_of_full_draws():
    spec = DataSpec("gray8", (1, 8, 8))
    dec = build("pixelcnnpp", spec)
    z = torch.randn(2, 3, dtype=torch.float64)
    full = dec.sample(z, generator=torch.Generator().manual_seed(1))
    for fast in (True, False):
        part = dec.sample(z, generator=torch.Generator().manual_seed(1), fast=fast, rows=3)
        assert torch.equal(part[:, :, :3], full[:, :, :3]) and (part[:, :, 3:] == 0).all()
    with pytest.raises(ValueError, match="rows"):
        dec.sample(z, rows=9)


@pytest.mark.parametrize("name,spec,options", [CASES[1], ("pixelcnnpp", DataSpec("rgb8", (3, 8, 8)), {"nr_filters": 4})])
def test_availability_is_the_exact_dependency(name, spec, options):
    """The step at which the fast loop computes the output of pixel i is 1 + the last pixel it depends on
    (gradients, float64): never too early (that would read pixels not drawn yet), never later than needed."""
    dec = build(name, spec, **options)
    _, h, w = spec.shape
    z = torch.randn(1, 3, dtype=torch.float64)
    nodes, out = record(dec, z)
    avail = torch.from_numpy(availability(tuple(n.signature() for n in nodes), h, w)[out]).flatten()
    last = torch.zeros(h * w, dtype=torch.long)
    for seed in range(2):
        x = random_images(spec, 1, seed=seed).requires_grad_()
        y = dec(x, z)[0].flatten(1)
        for i in range(h * w):
            (g,) = torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)
            seen = torch.nonzero(g[0].abs().sum(0).flatten()).flatten()
            last[i] = max(int(last[i]), int(seen.max()) + 1 if len(seen) else 0)
    assert torch.equal(avail, last)
    assert (avail <= torch.arange(h * w)).all()


def _read_rectangles(node, rect, sizes):
    """The input positions that computing a node on output rectangle (r0, r1, c0, c1) reads, clipped to
    the inputs' images (written out here from the layer geometries, independently of the sampler)."""
    r0, r1, c0, c1 = rect
    out = []
    if node.kind == "pointwise":
        return [(i, r0, r1, c0, c1) for i in node.inputs]
    src = node.inputs[0]
    if node.kind == "conv":
        kh, kw, s, pl, _pr, pt, _pb = node.geom
        rows, cols = (r0 * s - pt, (r1 - 1) * s - pt + kh), (c0 * s - pl, (c1 - 1) * s - pl + kw)
    elif node.kind == "shift":
        down, right = node.geom
        rows, cols = (r0 - down, r1 - down), (c0 - right, c1 - right)
    else:  # deconv: input (I, J) feeds rows s*I .. s*I + kh - 1, columns s*J - cl .. s*J - cl + kw - 1
        kh, kw, s, cl = node.geom
        h, w = sizes[src]
        ii = [i for i in range(h) if s * i <= r1 - 1 and s * i + kh - 1 >= r0]
        jj = [j for j in range(w) if s * j - cl <= c1 - 1 and s * j - cl + kw - 1 >= c0]
        rows, cols = (min(ii), max(ii) + 1), (min(jj), max(jj) + 1)
    h, w = sizes[src]
    out.append((src, max(rows[0], 0), min(rows[1], h), max(cols[0], 0), min(cols[1], w)))
    return out + [(i, r0, r1, c0, c1) for i in node.inputs[1:]]


@pytest.mark.parametrize("spec", [DataSpec("rgb8", (3, 8, 12)), DataSpec("gray8", (1, 12, 8))])
def test_schedule_computes_every_needed_position_once_after_its_inputs(spec):
    """Every position the output needs is computed exactly once, no earlier than its availability, after
    every position it reads (inputs: at an earlier step or earlier in the same step; the image: pixel
    r * W + c from step r * W + c + 1), and each output pixel by its own step."""
    dec = build("pixelcnnpp", spec, nr_filters=4)
    _, h, w = spec.shape
    nodes, out = record(dec, torch.zeros(1, 3, dtype=torch.float64))  # 1 x 3: the same graph as any batch
    sig = tuple(n.signature() for n in nodes)
    plan = schedule(sig, out)
    maps = availability(sig, h, w)
    sizes = [n.size for n in nodes]
    done = [torch.full(n.size, -1, dtype=torch.long) for n in nodes]  # the step each position was computed at
    done[0] = torch.arange(1, h * w + 1).reshape(h, w)
    for step, entries in enumerate(plan.steps):
        for i, r0, r1, c0, c1 in entries:
            assert (torch.from_numpy(maps[i][r0:r1, c0:c1]) <= step).all()
            assert (done[i][r0:r1, c0:c1] == -1).all(), f"node {i} computed twice"
            for j, a, b, ca, cb in _read_rectangles(nodes[i], (r0, r1, c0, c1), sizes):
                got = done[j][a:b, ca:cb]  # computed at an earlier step, or earlier in this one
                assert ((got >= 0) & (got <= step)).all(), f"node {i} at step {step} reads node {j} too early"
            done[i][r0:r1, c0:c1] = step
    assert ((done[out] >= 0) & (done[out] <= torch.arange(h * w).reshape(h, w))).all()
    needed = [False] * len(nodes)
    needed[out] = True
    for i in range(len(nodes) - 1, 0, -1):
        if needed[i]:
            for j in nodes[i].inputs:
                needed[j] = True
    for i in range(1, len(nodes)):
        if not needed[i]:
            assert (done[i] == -1).all()


class _Cheater(AutoregressiveDecoder):
    """A 'decoder' whose network looks at the current pixel: the fast sampler must refuse it."""

    supports = ("binary",)

    def __init__(self, spec, latent_dim):
        super().__init__(spec, latent_dim, True, "cheater")
        self.conv = ShiftedConv2d(2, 1, (2, 2), mode="down_right")

    def network(self, ops, x, z, dropout):
        return ops.conv(self.conv, ops.pointwise(with_ones, x, channels=2))  # no shift: sees pixel i

    def sample_pixel(self, params, uniforms):
        return (torch.logit(uniforms) < params).to(params.dtype)


def test_a_non_causal_network_is_refused():
    dec = _Cheater(DataSpec("binary", (1, 4, 4)), 2)
    with pytest.raises(RuntimeError, match="not autoregressive"):
        dec.sample(torch.zeros(1, 2), fast=True)


def test_fast_option_and_keyword_pick_the_sampler(monkeypatch):
    spec = DataSpec("binary", (1, 3, 3))
    used = []
    monkeypatch.setattr(fast_sampling, "sample_fast", lambda *a: used.append("fast") or torch.zeros(1))
    monkeypatch.setattr(fast_sampling, "sample_naive", lambda *a: used.append("naive") or torch.zeros(1))
    z = torch.zeros(1, 3, dtype=torch.float64)
    build("pixelcnn", spec, layers=1, channels=2).sample(z)
    build("pixelcnn", spec, layers=1, channels=2, fast=False).sample(z)
    build("pixelcnn", spec, layers=1, channels=2, fast=False).sample(z, fast=True)
    build("pixelcnnpp", DataSpec("gray8", (1, 4, 4))).sample(z, fast=False)
    assert used == ["fast", "naive", "fast", "naive"]


def test_ancestral_sampler_fast_option_gives_the_same_samples():
    spec = DataSpec("binary", (1, 5, 5))
    reg = infovae.registry()
    torch.manual_seed(0)
    encoder = reg.create("encoders", "mlp", {}, spec, 3)
    model = infovae.InfoVAE(spec, 3, encoder, build("pixelcnn", spec, layers=2, channels=4)).double().eval()
    draws = []
    for fast in ("yes", "no"):
        sampler = reg.create("samplers", "ancestral", {"fast": fast})
        draws.append(sampler(model, 4, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(draws[0], draws[1])


def test_float32_fast_and_naive_agree():
    """float32: the parameters agree to rounding (checked by teacher forcing above); the draws then agree
    except where a uniform falls within rounding distance of a decision boundary, which is rare."""
    spec = DataSpec("rgb8", (3, 8, 8))
    dec = build("pixelcnnpp", spec, dtype=torch.float32, nr_filters=8)
    report = fast_sampling.compare_samplers(dec, torch.randn(4, 3))
    assert report["subpixels_equal"] > 0.9


def test_bench_cli_runs_a_tiny_configuration(tmp_path):
    from infovae.cli.commands.bench_decoders import decoders

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(decoders, ["--sizes", "8", "--modes", "eager,bf16", "--steps", "1", "--warmup", "0",
                                        "--batch-size", "2", "--sample-batch", "2", "--naive-rows", "2", "--rounds", "2",
                                        "--out", str(out)])
    assert res.exit_code == 0, res.output
    import json

    result = json.loads(out.read_text())
    assert {r["mode"] for r in result["training"]} == {"eager", "bf16"}
    assert all(r["status"] == "ok" for r in result["training"])
    assert [r["decoder"] for r in result["sampling"]] == ["pixelcnn", "pixelcnnpp"]
    assert all(r["naive_extrapolated_from_rows"] == 2 and r["speedup"] > 0 for r in result["sampling"])
    assert all(r["rounds"] == 2 and len(r["wall_s_per_round"]["naive"]) == 2 and r["speedup_cpu"] > 0
               and len(r["cpu_s_per_round"]["fast"]) == 2
               and r["identical"] for r in result["sampling"])
    bad = CliRunner().invoke(decoders, ["--decoders", "wavenet"])
    assert bad.exit_code != 0 and "unknown decoder" in bad.output
    if not torch.cuda.is_available():
        bad = CliRunner().invoke(decoders, ["--device", "cuda", "--sizes", "8"])
        assert bad.exit_code != 0 and "no CUDA device" in bad.output


@pytest.mark.gpu
@pytest.mark.parametrize("name,spec,options", [CASES[0], CASES[3]])
def test_cuda_sampling_and_likelihood(name, spec, options):
    """On CUDA: fast == naive in float64, teacher forcing reproduces the network, log_prob matches the CPU."""
    cpu = build(name, spec, **options)
    dec = build(name, spec, **options).cuda()
    z = torch.randn(3, 3, dtype=torch.float64)
    x = random_images(spec, 3)
    torch.testing.assert_close(dec.log_prob(x.cuda(), z.cuda()).cpu(), cpu.log_prob(x, z), rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(fast_outputs(dec, x.cuda(), z.cuda()), dec(x.cuda(), z.cuda()), rtol=1e-10, atol=1e-10)
    draws = [dec.sample(z.cuda(), generator=torch.Generator(device="cuda").manual_seed(0), fast=f) for f in (False, True)]
    assert torch.equal(draws[0], draws[1])


RING_CASES = [  # odd sizes, batch 1, every data kind the two decoders take
    ("pixelcnn", DataSpec("binary", (1, 9, 7)), {"layers": 3, "channels": 4}, 1),
    ("pixelcnn", DataSpec("gray8", (1, 10, 5)), {"layers": 2, "channels": 4, "kernel_size": 5}, 2),
    ("pixelcnnpp", DataSpec("gray8", (1, 20, 12)), {"nr_filters": 4}, 1),  # 20 -> 10 -> 5
    ("pixelcnnpp", DataSpec("rgb8", (3, 16, 12)), {"nr_filters": 4, "nr_resnet": 2}, 2),
    ("pixelcnnpp", DataSpec("rgb8", (3, 12, 28)), {"nr_filters": 4}, 3),
]


@pytest.mark.parametrize("name,spec,options,batch", RING_CASES)
def test_ring_buffers_and_shared_step_closures_give_the_naive_samples_bitwise(name, spec, options, batch):
    """The caches keep a few rows each (ring buffers) and steps of different rows reading the same ring
    slots share their closures; the float64 samples are still bitwise the naive ones."""
    dec = build(name, spec, **options)
    z = torch.randn(batch, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    naive = dec.sample(z, generator=torch.Generator().manual_seed(7), fast=False)
    uniforms = torch.rand((batch, dec.uniforms_per_pixel, *spec.shape[1:]), generator=torch.Generator().manual_seed(7))
    per_pixel = uniforms.to(torch.float64).permute(2, 3, 0, 1).reshape(-1, batch, dec.uniforms_per_pixel)
    stats = {}
    fast = fast_sampling.run_fast(dec, z, lambda r, c, p: dec.sample_pixel(p, per_pixel[r * spec.shape[2] + c]), stats=stats)
    assert torch.equal(naive, fast)
    nodes, out = record(dec, z)
    plan = schedule(tuple(n.signature() for n in nodes), out)
    h = spec.shape[1]
    assert any(0 < ring < h for ring in plan.rings)  # some caches are rings ...
    assert stats["closures"] < stats["entries"]  # ... and steps share closures


def test_a_ring_is_only_as_short_as_the_reads_allow():
    """Rows written at steps 0, 1, 2, 3 (one row per step), each last read one step later: slot r mod 1
    would be rewritten at the step reading row r, two rows are enough; a zero padding row above shares
    the slot of row 1 (written at step 1), so it must be read for the last time before step 1; a view of
    rows 1..2 must not wrap, and rows below the image (bottom margin) rule rings out."""
    written = torch.arange(4)[:, None].expand(4, 3).numpy().copy()
    last = (torch.arange(4)[:, None] + 1).expand(4, 3).numpy().copy()
    assert fast_sampling._ring_rows(4, 0, 0, written, last, set()) == 2
    padded = torch.cat((torch.full((1, 3), 0), torch.from_numpy(last))).numpy()  # row -1, then rows 0..3
    assert fast_sampling._ring_rows(4, 1, 0, written, padded, set()) == 2
    padded[0] = 1  # row -1 read at step 1, when row 1 takes its slot
    assert fast_sampling._ring_rows(4, 1, 0, written, padded, set()) == 0
    assert fast_sampling._ring_rows(8, 0, 0, torch.arange(8)[:, None].numpy().copy(),
                                    (torch.arange(8)[:, None] + 1).numpy().copy(), {(1, 3)}) == 4
    assert fast_sampling._ring_rows(4, 0, 1, written, last, set()) == 0


@pytest.mark.parametrize("name,spec,options", [
    ("pixelcnn", DataSpec("gray8", (1, 1, 1)), {"layers": 1, "channels": 4}),  # layers never needed at all
    ("pixelcnn", DataSpec("binary", (1, 1, 6)), {"layers": 2, "channels": 4}),  # one row: no rows above
    ("pixelcnn", DataSpec("binary", (1, 5, 1)), {"layers": 2, "channels": 4}),  # one column
    ("pixelcnnpp", DataSpec("rgb8", (3, 4, 4)), {"nr_filters": 4}),  # coarsest level 1 x 1
])
def test_tiny_images_give_the_naive_samples_bitwise(name, spec, options):
    dec = build(name, spec, **options)
    z = torch.randn(1, 3, dtype=torch.float64)
    naive = dec.sample(z, generator=torch.Generator().manual_seed(2), fast=False)
    assert torch.equal(naive, dec.sample(z, generator=torch.Generator().manual_seed(2), fast=True))
