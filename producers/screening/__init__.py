"""What ``waveshield screen``, ``results`` and ``calibrate`` run: the settings and records of a screening
(:mod:`.screen`), the command's runs (:mod:`.runs`: once, in the background, watching a folder), the
streaming intake (:mod:`.ingest`), the watched folder (:mod:`.watch`) and calibration (:mod:`.calibrate`).
"""
