"""Classifiers: the CIFAR ResNet18 (:mod:`.network`), checkpoint cards and their hashes (:mod:`.checkpoints`,
torch-free), the weights folder a job reads (:mod:`.store`) and the training loop (:mod:`.training`).
"""
