"""infovae-energy-distance: registers the ``energy`` divergence with infovae.

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
