"""Metrics of generated image sets, one module per family, each usable on its own:
``msssim`` (MS-SSIM diversity and fidelity), ``distances`` (Fréchet and kernel distances of
feature sets), ``prdc`` (precision, recall, density, coverage), ``memorisation`` (nearest
training images and the data-copying test)."""
