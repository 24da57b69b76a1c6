"""Generative-model stage: datasets, VAE, features, attention memory, G, D, losses, baselines,
training and metrics."""
