"""The image sets of the generative stage and their torch loaders.

``positron_dataset`` (positron.h5 from the reconstructions), ``ct_dataset`` with
``ct_readers`` and ``synthetic_ct`` (ct.h5), ``splits`` (train/val/test by group),
``image_set`` (every image set opened with its columns checked against its images),
``loaders`` (torch datasets over both files) and ``positron_features`` (PCANet memory
features of the training images, features.h5).
"""
