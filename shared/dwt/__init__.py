"""The discrete wavelet transform defence: reconstruction (:mod:`.transform`), its noise estimate
(:mod:`.noise`), the named defences (:mod:`.defences`) and their tuning (:mod:`.tuning`).

The values a defence's options may take are here, known without torch: producers check settings with them.
"""

import pywt

#: Thresholding of the detail coefficients.
THRESHOLD_MODES = ("soft", "hard")
#: How the threshold is chosen.
METHODS = ("BayesShrink", "VisuShrink")
#: Every discrete wavelet PyWavelets knows.
WAVELETS = tuple(pywt.wavelist(kind="discrete"))
#: The wavelets ``waveshield tune`` sweeps unless told otherwise.
DEFAULT_WAVELETS = ("haar", "db2", "db3", "db4", "sym4")
