"""The discrete wavelet transform defence: reconstruction (:mod:`.transform`), its noise estimate
(:mod:`.noise`), the named defences (:mod:`.defences`) and their tuning (:mod:`.tuning`).

The values a defence's options may take are here, known without torch: producers check settings with them.
``WAVELETS``, every discrete wavelet PyWavelets knows, is read from PyWavelets when first asked for, so that
a command that never checks a wavelet starts without it.
"""

#: Thresholding of the detail coefficients.
THRESHOLD_MODES = ("soft", "hard")
#: How the threshold is chosen.
METHODS = ("BayesShrink", "VisuShrink")
#: The wavelets ``waveshield tune`` sweeps unless told otherwise.
DEFAULT_WAVELETS = ("haar", "db2", "db3", "db4", "sym4")


def __getattr__(name: str):
    if name != "WAVELETS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pywt

    value = globals()["WAVELETS"] = tuple(pywt.wavelist(kind="discrete"))  # once
    return value
