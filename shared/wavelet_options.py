"""The values a DWT defence's options may take, known without torch (producers check settings with them)."""

import pywt

#: Thresholding of the detail coefficients.
MODES = ("soft", "hard")
#: How the threshold is chosen.
METHODS = ("BayesShrink", "VisuShrink")
#: Every discrete wavelet PyWavelets knows.
WAVELETS = tuple(pywt.wavelist(kind="discrete"))
