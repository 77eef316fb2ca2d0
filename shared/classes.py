"""The class names every model of the experiment predicts (kept apart from the models: no torch to import)."""

#: CIFAR-10's classes, in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
