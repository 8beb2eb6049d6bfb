"""The six modality names, and the nominal 'wavelengths' of sensors that have none.

Convention (kept everywhere: registry, training, UI): wavelengths are in micrometres, one per
band. Radar and elevation have no optical wavelength, so they get documented nominal values:
- radar: the carrier's physical wavelength in µm (Sentinel-1 C-band 5.55 cm = 55 500 µm,
  X-band 3.1 cm = 31 000 µm). The VH channel gets 1.05 × that value so the model can tell the
  two polarisations apart (they share a carrier).
- elevation: a reserved value of 1e6 µm (1 m), far from any sensor, meaning "height in metres".
The image tower encodes log10(λ), so these land in their own range (optical -0.4..0.4,
thermal ~1.0, radar ~4.5-4.8, elevation 6.0).
"""

from typing import Literal, overload

MODALITIES = ("rgb", "multispectral", "sar", "hyperspectral", "infrared", "elevation")

C_BAND_UM = 55_500.0
X_BAND_UM = 31_000.0
CROSS_POL_FACTOR = 1.05
ELEVATION_UM = 1_000_000.0
LWIR_UM = 11.0

# Nominal centres used where a file says only "red, green, blue" (colour interpretation).
RGB_UM = (0.665, 0.560, 0.490)


@overload
def check_modality(modality: str | None, *, allow_none: Literal[False] = False) -> str: ...


@overload
def check_modality(modality: str | None, *, allow_none: bool) -> str | None: ...


def check_modality(modality: str | None, *, allow_none: bool = False) -> str | None:
    """`modality` if it is one of MODALITIES (None too with `allow_none`), else InputError."""
    from .errors import InputError

    if modality is None and allow_none:
        return None
    if modality not in MODALITIES:
        raise InputError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
    return modality
