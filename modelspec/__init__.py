"""modelspec: the one description of a network that custom_impl and reference_impl are both built from."""
from .loader import load, zoo_names
from .spec import ACTIVATIONS, LAYER_TYPES, LOSSES, PHASES, Flops, Layer, ModelSpec, SpecError, Traffic

__all__ = ["ACTIVATIONS", "LAYER_TYPES", "LOSSES", "PHASES", "Flops", "Layer", "ModelSpec", "SpecError",
           "Traffic", "load", "zoo_names"]
