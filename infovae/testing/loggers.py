"""The logger contract: what every ``register_loggers`` plugin must survive.

    from infovae.testing import check_logger

    def test_my_logger(tmp_path):
        check_logger(MyLogger, tmp_path, {"project": "demo"}, read_back=my_reader)

``check_logger`` builds the logger as training does (``factory(run_dir, **options)``) and
drives it through a short run's calls: the spec as params, scalars at increasing steps
(including a non-finite value, which a logger must drop or store without raising), a gray
and an RGB uint8 image, an evaluation report, then ``close``. It also checks that a logger
that raises is switched off with one warning by ``infovae.loggers.LoggerSet`` while the
others continue. ``read_back(run_dir)``, when given, must return what the tracker stored as
{"scalars": {tag: [(step, value), ...]}, "params": {...}, "images": [tag, ...]} and is then
compared with what was sent: the independent check that the data really arrived.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

SPEC = {"dataset.name": "digits", "latent_dim": 8, "decoder.name": "bernoulli-mlp", "regularizers": "mmd×100", "trainer.lr": 0.001}
SCALARS = [
    (10, {"epoch": 0.5, "train/loss": 40.25, "train/reconstruction": 39.5, "train/mmd": 0.0075}),
    (20, {"epoch": 1.0, "train/loss": 31.0, "train/reconstruction": 30.5, "train/mmd": 0.005, "valid/loss": 32.0,
          "track/mutual-information": 2.5, "track/mutual-information/log_M": 6.2}),
    (30, {"epoch": 1.5, "train/loss": float("nan"), "train/reconstruction": 29.0, "train/mmd": 0.004}),
]
EVALUATION = {"run": "r", "split": "test", "examples": 100, "step": 30,
              "metrics": {"nll": {"value": 28.5, "std_err": 0.25, "units": "nats per example"}, "active-units": {"value": 3}}}


def images():
    gray = (np.arange(29 * 29, dtype=np.uint8).reshape(29, 29) * 7) % 251
    rgb = np.stack([gray, gray[::-1], gray.T], -1).astype(np.uint8)
    return [("samples/gray", gray), ("samples/rgb", rgb)]


class _Exploding:
    def log_scalars(self, step, scalars):
        raise OSError(28, "No space left on device")


def check_logger(factory: Callable[..., Any], run_dir, options: Optional[Mapping[str, Any]] = None,
                 read_back: Optional[Callable[[Path], Dict[str, Any]]] = None) -> None:
    """Run the logger contract; raises AssertionError naming the first broken rule."""
    from infovae.loggers import LoggerSet, LoggerWarning

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = factory(run_dir, **dict(options or {}))
    for method in ("log_params", "log_scalars", "log_image", "log_evaluation", "close"):
        assert callable(getattr(logger, method, None)), f"a logger needs a {method}() method (subclass infovae.Logger)"
    logger.log_params(dict(SPEC))
    for step, scalars in SCALARS:
        logger.log_scalars(step, dict(scalars))
    for tag, img in images():
        logger.log_image(20, tag, img)
    logger.log_evaluation(dict(EVALUATION))
    logger.close()

    # A failing neighbour is switched off with exactly one warning; this logger keeps receiving.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        group = LoggerSet([("exploding", _Exploding())], strict=())
        for step, scalars in SCALARS:
            group.log_scalars(step, scalars)
    assert sum(issubclass(w.category, LoggerWarning) for w in caught) == 1, "a failing logger must warn exactly once"
    assert group.names() == [] and "exploding" in group.failed

    if read_back is None:
        return
    stored = read_back(run_dir)
    sent: Dict[str, list] = {}
    for step, scalars in SCALARS:
        for k, v in scalars.items():
            if math.isfinite(v):
                sent.setdefault(k, []).append((step, v))
    got = stored.get("scalars", {})
    for tag, points in sent.items():
        assert tag in got, f"scalar {tag!r} was logged but not stored (stored: {sorted(got)})"
        assert [s for s, _ in got[tag]] == [s for s, _ in points], f"{tag}: steps {got[tag]} != sent {points}"
        for (_, a), (_, b) in zip(got[tag], points):
            assert math.isclose(a, b, rel_tol=1e-6), f"{tag}: stored {a} != sent {b}"
    for k, v in SPEC.items():
        assert str(stored.get("params", {}).get(k)) == str(v), f"param {k!r}: stored {stored.get('params', {}).get(k)!r} != {v!r}"
    for tag, _ in images():
        assert any(tag in t for t in stored.get("images", [])), f"image {tag!r} was logged but not stored"
    for k in ("eval/nll", "eval/nll/std_err", "eval/active-units"):
        assert k in got, f"evaluation scalar {k!r} not stored"
