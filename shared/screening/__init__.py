"""Screening: what is said of each image and of a set (:mod:`.verdicts`), the settings it scores with
(:mod:`.config`), the learned :mod:`.detector`, and how a detector is fitted and measured: a source's
examples (:mod:`.examples`), its measures (:mod:`.measures`), the attacker who knows it (:mod:`.evasion`)
and benign changes (:mod:`.benign`).
"""
