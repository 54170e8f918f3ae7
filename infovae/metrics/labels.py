"""Metrics that need class labels: class distribution of samples, semi-supervised accuracy.

Both use scikit-learn (imported on first use) and fixed, seeded splits of the labelled examples
(``split_seed``), so two models evaluated on the same data see the same split.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch

from ._common import batches, check_labels, cpu_generator, encode, make_generator, model_device, model_values


def class_cross_entropy(data_labels, sample_labels, num_classes: int, pseudo_count: float = 0.0) -> Dict[str, object]:
    """Histogram comparison in nats between the class histogram p of the data and the histogram q of
    the samples (counts plus ``pseudo_count`` per class, renormalised).

    Returns ``kl`` = KL(p || q) = -sum_c p(c) (log q(c) - log p(c)), the InfoVAE paper's
    l_ce(c, c_hat) (0 iff q = p on the support of p), ``cross_entropy`` H(p, q) = -sum_c p(c) log q(c)
    and ``entropy`` H(p), with H(p, q) = H(p) + KL(p || q). Both are infinite when a class present in
    the data gets no sample and pseudo_count is 0.
    """
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
    p = np.bincount(np.asarray(data_labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    c = np.bincount(np.asarray(sample_labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if p.sum() == 0 or c.sum() + pseudo_count == 0:
        raise ValueError("class_cross_entropy needs at least one data label and one sample label")
    p /= p.sum()
    q = (c + pseudo_count) / (c.sum() + pseudo_count * num_classes)
    support = p > 0
    with np.errstate(divide="ignore"):
        ce = float(-(p[support] * np.log(q[support])).sum())
    entropy = float(-(p[support] * np.log(p[support])).sum())
    with np.errstate(divide="ignore"):
        kl = float((p[support] * (np.log(p[support]) - np.log(q[support]))).sum())
    return {"kl": kl, "cross_entropy": ce, "entropy": entropy, "data_histogram": p.tolist(), "sample_histogram": q.tolist()}


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(x.shape[0], -1).double().cpu().numpy()


def _split(n: int, n_train: int, seed: int):
    perm = torch.randperm(n, generator=cpu_generator(seed))
    return perm[:n_train], perm[n_train:]


@torch.no_grad()
def class_distribution(
    model,
    x: torch.Tensor,
    *,
    labels,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 1024,
    num_generated: Optional[int] = None,
    pseudo_count: float = 1.0,
    classifier_test_fraction: float = 0.2,
    split_seed: int = 0,
    classifier_cache: str = "",
) -> Dict[str, object]:
    """The InfoVAE paper's l_ce (nats): KL(c || c_hat) between the data's class histogram c and the
    histogram c_hat of classified ancestral samples; 0 when they match.

    A small CNN (``infovae.classifier``) on the model values is fit on a seeded (1 - ``classifier_test_fraction``)
    share of the labelled examples; its accuracy on the rest is reported (``classifier_accuracy``). With
    ``classifier_cache`` (a directory) the fitted CNN is stored there as safetensors and reused by later calls
    on the same data, labels and split. It labels ``num_generated`` (default N) ancestral samples
    (z ~ p(z), x ~ p(x|z)).
    value = l_ce = -sum_c p_data(c) (log p_samples(c) - log p_data(c)) = KL(p_data || p_samples)
    (section 4.2.1 of the paper), where p_data is the histogram of the given labels and p_samples the
    classifier's histogram over the samples with ``pseudo_count`` added per class (1 by default, so
    that a class never generated costs a finite penalty). Details: ``cross_entropy`` H(p_data,
    p_samples) = value + entropy (this metric's headline before version 0.2) and ``entropy`` H(p_data).
    """
    from ..classifier import describe, trained_classifier

    pseudo_count, classifier_test_fraction = float(pseudo_count), float(classifier_test_fraction)
    x = model_values(model, x)
    n = x.shape[0]
    y = check_labels(labels, n)
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
    if not 0 < classifier_test_fraction < 1:
        raise ValueError(f"classifier_test_fraction must be in (0, 1), got {classifier_test_fraction}")
    n_test = max(1, int(round(n * classifier_test_fraction)))
    if n - n_test < 2:
        raise ValueError(f"class-distribution needs more labelled examples to fit a classifier, got {n}")
    tr, te = _split(n, n - n_test, split_seed)
    if len(torch.unique(y[tr])) < 2:
        raise ValueError("class-distribution: the classifier's training split holds a single class")
    num_generated = n if num_generated is None else int(num_generated)
    if num_generated < 1:
        raise ValueError(f"num_generated must be >= 1, got {num_generated}")

    num_classes = int(y.max()) + 1
    with torch.enable_grad():
        clf, info = trained_classifier(x.float(), y.to(x.device), tr.to(x.device), te.to(x.device), num_classes,
                                       cache_dir=classifier_cache or None, seed=split_seed)

    generator = make_generator(generator, model_device(model))
    predicted = []
    for s in batches(num_generated, batch_size):
        samples = model.sample(s.stop - s.start, generator=generator)
        predicted.append(clf.predict(samples, batch_size))
    predicted = np.concatenate(predicted)
    res = class_cross_entropy(y.numpy(), predicted, num_classes, pseudo_count)
    ce, l_ce = res["cross_entropy"], res["kl"]
    if not math.isfinite(l_ce):
        raise FloatingPointError(
            "class-distribution: a class of the data never appears among the samples; "
            "l_ce = KL(c || c_hat) is infinite (use pseudo_count > 0)"
        )
    return {
        "value": l_ce,
        "cross_entropy": ce,
        "entropy": res["entropy"],
        "units": "nats",
        "data_histogram": res["data_histogram"],
        "sample_histogram": res["sample_histogram"],
        "num_generated": num_generated,
        "pseudo_count": float(pseudo_count),
        "classifier": describe(),
        "classifier_accuracy": info["accuracy"],
        "classifier_train": int(tr.numel()),
        "classifier_test": int(te.numel()),
        "classifier_cached": bool(info["cached"]),
        "classifier_path": info["path"],
        "description": "l_ce = KL(data class histogram || histogram of classified ancestral samples), the paper's "
        "measure (0 when they match); cross_entropy = l_ce + entropy",
    }


def semi_supervised_combine(model, rows: Dict[str, torch.Tensor], *, labels, num_labels: int = 1000, svm_c: float = 1.0,
                            split_seed: int = 0, **_ignored) -> Dict[str, object]:
    """``semi_supervised`` from the posterior means of all N examples (rows "loc" (N, D), as from
    ``infovae.metrics.latent.codes_rows``) and their labels; the SVM is fit in this one process."""
    from sklearn.svm import SVC

    loc = rows["loc"]
    n = loc.shape[0]
    y = check_labels(labels, n)
    n_train = min(int(num_labels), n // 2)
    if n_train < 2:
        raise ValueError(f"semi-supervised needs at least 4 labelled examples (and num_labels >= 2), got N={n}")
    tr, te = _split(n, n_train, split_seed)
    y_tr, y_te = y[tr].numpy(), y[te].numpy()
    if len(np.unique(y_tr)) < 2:
        raise ValueError("semi-supervised: the labelled subset holds a single class; use more labels")
    codes = loc.cpu().numpy()
    svm = SVC(kernel="rbf", C=float(svm_c), gamma="scale").fit(codes[tr.numpy()], y_tr)
    accuracy = float(svm.score(codes[te.numpy()], y_te))
    majority = np.bincount(y_tr).argmax()
    return {
        "value": accuracy,
        "n_train": int(n_train),
        "n_test": int(te.numel()),
        "chance": float((y_te == majority).mean()),
        "classifier": f"scikit-learn SVC(kernel='rbf', C={float(svm_c):g}, gamma='scale') on posterior means",
        "description": f"SVM accuracy on codes: fit on {n_train} seeded labelled examples, scored on the other {int(te.numel())}",
    }


@torch.no_grad()
def semi_supervised(
    model,
    x: torch.Tensor,
    *,
    labels,
    batch_size: int = 1024,
    num_labels: int = 1000,
    svm_c: float = 1.0,
    split_seed: int = 0,
) -> Dict[str, object]:
    """Accuracy of an RBF SVM (scikit-learn SVC, C=``svm_c``, gamma="scale") trained on the posterior
    means E_q[z|x] of a fixed seeded subset of min(``num_labels``, N // 2) labelled examples and scored
    on all the others. "chance" is the accuracy of always predicting the training subset's most
    frequent class.
    """
    x = model_values(model, x)
    n = x.shape[0]
    y = check_labels(labels, n)
    if min(int(num_labels), n // 2) < 2:
        raise ValueError(f"semi-supervised needs at least 4 labelled examples (and num_labels >= 2), got N={n}")
    if len(np.unique(y[_split(n, min(int(num_labels), n // 2), split_seed)[0]].numpy())) < 2:
        raise ValueError("semi-supervised: the labelled subset holds a single class; use more labels")
    loc, _ = encode(model, x, batch_size, "semi-supervised")
    return semi_supervised_combine(model, {"loc": loc}, labels=y, num_labels=num_labels, svm_c=svm_c, split_seed=split_seed)
