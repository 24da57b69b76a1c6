"""Building blocks of the generative methods: the CT VAE (sec. 3.2), PCA and PCANet
(sec. 3.3), the attention memory (eq. 6), the DenseNet generator (eq. 7), the PatchGAN
discriminator (eq. 8) and the weight initialisation they share."""
