"""The accuracy grid: a plan and its words (:mod:`.plan`, torch-free: attack specs, model paths, cells),
read from a spec file (:mod:`.spec`), run batch by batch (:mod:`.run`), reported as tables and charts
(:mod:`.report`; the charts and pages are drawn by :mod:`shared.reports`); an adversarial corpus's files
(:mod:`.corpus`).
"""
