"""infovae-energy-distance: registers the ``energy`` divergence and the ``energy-prior``
metric with infovae.

This module is what the ``infovae`` entry point names; it must stay cheap to
import (no torch): it only tells infovae where the implementation lives, and
infovae imports ``infovae_energy_distance.energy`` when the divergence is built.
"""
from infovae import Option, hookimpl


@hookimpl
def register_divergences(register):
    register(
        "energy",
        "infovae_energy_distance.energy:EnergyDistance",
        summary="Energy distance between the codes and prior samples (a metric on distributions).",
        options=[
            Option("prior_samples", int, 0, "prior draws per step (0: as many as codes in the batch)", minimum=0),
        ],
    )


@hookimpl
def register_metrics(register):
    register(
        "energy-prior",
        "infovae_energy_distance.metric:EnergyToPrior",
        summary="Energy distance between the codes z ~ q(z|x) of the split and prior draws (units of z).",
        options=[
            Option("prior_samples", int, 0, "prior draws (0: as many as examples)", minimum=0),
        ],
    )
