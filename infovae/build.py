"""Build data sets, models and objectives from a RunSpec through the registry.

Every check that can fail (unknown plugin, bad option, decoder that cannot
model the data, latent size, batch size) runs here, before any training.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import CapabilityError, DataError, PluginBuildError, PluginOptionError, UnknownPluginError
from .objective import check_weight
from .registry import Registry, describe_plugin, registry as default_registry
from .runs import DivergenceChoice, PluginChoice, RunSpec, TrainerConfig
from .spec import DataSpec


def resolve_choice(reg: Registry, kind: str, name: str, options: Optional[Mapping[str, Any]] = None) -> PluginChoice:
    """A plugin choice with typed, complete options (errors name the bad key)."""
    return PluginChoice(name, reg.resolve_options(kind, name, options))


def check_decoder_supports(reg: Registry, decoder: str, spec: DataSpec, dataset: str = "the data set") -> None:
    info = reg.info("decoders", decoder)
    if info.supports is not None and spec.kind not in info.supports:
        fits = [i.name for i in reg.plugins("decoders") if i.supports and spec.kind in i.supports]
        raise CapabilityError(
            f"decoder {decoder!r} models {', '.join(info.supports)} data, but {dataset} holds {spec.kind} data "
            f"of shape {spec.shape}. Decoders for {spec.kind}: {', '.join(fits) or 'none installed'}."
        )


def create_dataset(reg: Registry, choice: PluginChoice):
    """Instantiate a data set and check what it declares."""
    ds = reg.create("datasets", choice.name, choice.options)
    spec = getattr(ds, "spec", None)
    if not isinstance(spec, DataSpec):
        raise DataError(f"data set {choice.name!r} did not provide a DataSpec as .spec (got {spec!r})")
    return ds


def plugin_provenance(reg: Registry, spec: RunSpec) -> Dict[str, Dict[str, Optional[str]]]:
    out = {}
    pairs = [("datasets", spec.dataset.name), ("encoders", spec.encoder.name), ("decoders", spec.decoder.name)]
    pairs += [("divergences", d.name) for d in spec.divergences]
    for kind, name in pairs:
        info = reg.info(kind, name)
        out[f"{kind}/{name}"] = {"distribution": info.source.distribution, "version": info.source.version}
    return out


def make_run_spec(
    *,
    dataset: str,
    dataset_options: Mapping[str, Any],
    latent_dim: int,
    encoder: str,
    encoder_options: Mapping[str, Any],
    decoder: str,
    decoder_options: Mapping[str, Any],
    divergences: Sequence[Tuple[str, float, Mapping[str, Any]]],
    trainer: TrainerConfig,
    reg: Optional[Registry] = None,
) -> Tuple[RunSpec, Any]:
    """Validate every choice and return (RunSpec, dataset object)."""
    import infovae

    reg = reg or default_registry()
    if int(latent_dim) < 1:
        raise PluginOptionError(f"latent dimension must be at least 1, got {latent_dim}")
    # Resolve all names and options first: cheap errors before the data set is read.
    enc = resolve_choice(reg, "encoders", encoder, encoder_options)
    dec = resolve_choice(reg, "decoders", decoder, decoder_options)
    divs: List[DivergenceChoice] = []
    seen = set()
    for name, weight, opts in divergences:
        if name in seen:
            raise PluginOptionError(f"divergence {name!r} given more than once; give it once with its total weight")
        seen.add(name)
        ch = resolve_choice(reg, "divergences", name, opts)
        divs.append(DivergenceChoice(ch.name, ch.options, check_weight(name, weight)))
    ds_choice = resolve_choice(reg, "datasets", dataset, dataset_options)
    check_trainer(trainer)
    ds = create_dataset(reg, ds_choice)
    check_decoder_supports(reg, dec.name, ds.spec, f"data set {dataset!r}")
    spec = RunSpec(
        dataset=ds_choice, data=ds.spec, latent_dim=int(latent_dim), encoder=enc, decoder=dec,
        divergences=divs, trainer=trainer, infovae_version=infovae.__version__,
    )
    spec.plugins = plugin_provenance(reg, spec)
    return spec, ds


def check_trainer(t: TrainerConfig) -> None:
    def bad(msg):
        raise PluginOptionError(msg)

    if t.batch_size < 1:
        bad(f"batch size must be at least 1, got {t.batch_size}")
    if t.steps is None and t.epochs < 1:
        bad(f"epochs must be at least 1, got {t.epochs}")
    if t.steps is not None and t.steps < 1:
        bad(f"steps must be at least 1, got {t.steps}")
    if not t.lr > 0:
        bad(f"learning rate must be positive, got {t.lr}")
    if t.amp not in ("none", "bf16"):
        bad(f"amp must be 'none' or 'bf16', got {t.amp!r}")
    if t.device not in ("auto", "cpu") and not t.device.startswith("cuda"):
        bad(f"device must be auto, cpu or cuda[:N], got {t.device!r}")


def saved_plugin_info(reg: Registry, spec: RunSpec, kind: str, name: str):
    """``reg.info`` for a plugin a saved run uses; when it is missing, the error names the
    distribution and version that spec.json records for it."""
    try:
        return reg.info(kind, name)
    except UnknownPluginError as exc:
        rec = (spec.plugins or {}).get(f"{kind}/{name}") or {}
        dist, version = rec.get("distribution"), rec.get("version")
        if not dist:
            raise
        pin = f"{dist}=={version}" if version else dist
        raise UnknownPluginError(
            f"this run was trained with the {kind[:-1]} {name!r} from {dist} {version or ''}".rstrip()
            + f" (recorded in spec.json), which is not installed or failed to load here. Install it with "
            f"pip install '{pin}' (see 'infovae plugins' for plugins that failed to load)."
        ) from exc


def _check_module(reg: Registry, kind: str, name: str, obj: Any) -> Any:
    from torch import nn

    if not isinstance(obj, nn.Module):
        raise PluginBuildError(
            f"{describe_plugin(reg.info(kind, name))}: its factory returned {type(obj).__name__}, expected a "
            f"torch.nn.Module (e.g. a subclass of {'infovae.Divergence' if kind == 'divergences' else 'infovae.Decoder' if kind == 'decoders' else 'torch.nn.Module'}). "
            f"Fix the factory registered under this name."
        )
    return obj


def build_model(spec: RunSpec, reg: Optional[Registry] = None, divergences: bool = True):
    """(model, objective) on the CPU, freshly initialised from the spec's plugins.

    With ``divergences=False`` no divergence is built and the objective is None (sampling and
    evaluation need no training-only plugin). A plugin the run needs that is not installed
    is named with the distribution and version spec.json recorded.
    """
    from .model import InfoVAE
    from .objective import Objective

    reg = reg or default_registry()
    for kind, name in [("encoders", spec.encoder.name), ("decoders", spec.decoder.name)] + (
        [("divergences", d.name) for d in spec.divergences] if divergences else []
    ):
        saved_plugin_info(reg, spec, kind, name)
    encoder = _check_module(reg, "encoders", spec.encoder.name,
                            reg.create("encoders", spec.encoder.name, spec.encoder.options, spec.data, spec.latent_dim))
    decoder = _check_module(reg, "decoders", spec.decoder.name,
                            reg.create("decoders", spec.decoder.name, spec.decoder.options, spec.data, spec.latent_dim))
    model = InfoVAE(spec.data, spec.latent_dim, encoder, decoder)
    if not divergences:
        return model, None
    objective = Objective([(d.name, d.weight, _check_module(reg, "divergences", d.name, reg.create("divergences", d.name, d.options)))
                           for d in spec.divergences])
    return model, objective


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PluginOptionError(f"device {name!r} was asked for but CUDA is not available; use --device cpu or auto")
    return torch.device(name)
