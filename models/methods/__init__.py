"""Generative methods, found by name.

Each module of this package defines one method (a :class:`~models.methods.base.Method`
subclass) and registers it with :func:`register`; :func:`method_class` looks one up. The
names are the ``train.methods`` entries of the config and the ``method`` wildcard of the
``train`` and ``generate`` rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself needs no torch: the Snakefile reads it
    from models.methods.base import Method

#: Every method's name and the input files it is built from besides its image sets
#: (``Method.needs``: the positron feature memory, the CT encoder). The one place these are
#: declared: :func:`register` gives them to the class, and the workflow reads them here
#: without importing the methods' modules (torch takes seconds to load, on every dry run).
NEEDS: dict[str, tuple[str, ...]] = {
    "attention_gan": ("positron", "features", "encoder"),
    "attention_gan_conditional": ("positron", "features", "encoder"),
    "attention_gan_no_context": ("positron", "features", "encoder"),
    "attention_gan_random_query": ("positron", "features", "encoder"),
    "attention_gan_no_apg": ("positron", "features", "encoder"),
    "attention_gan_shuffled_slots": ("positron", "features", "encoder"),
    "dcgan": (),
    "dcgan_conditional": (),
    "mask2image_global": (),
    "mask2image_patch": (),
    "pix2pix": (),
    "vae": (),
    "wgan_gp": (),
}

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator: make a method available under ``name`` (a key of :data:`NEEDS`),
    with its ``needs`` from there."""

    def add(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        if name not in NEEDS:
            raise ValueError(f"method {name!r} is not declared in models.methods.NEEDS")
        cls.name = name
        cls.needs = NEEDS[name]
        _REGISTRY[name] = cls
        return cls

    return add


def _load_all() -> None:
    # Importing the modules registers their classes.
    from models.methods import (  # noqa: F401
        attention_gan,
        conditional,
        dcgan,
        image_to_image,
        vae,
        wgan_gp,
    )


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown generative method {name!r}; known: "
                         f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    """Every registered method name."""
    _load_all()
    return sorted(_REGISTRY)


def method_needs(name: str) -> tuple[str, ...]:
    """The input files of method ``name`` besides its image sets (without importing it)."""
    if name not in NEEDS:
        raise ValueError(f"unknown generative method {name!r}; known: "
                         f"{', '.join(sorted(NEEDS))}")
    return NEEDS[name]


def run_name_pattern() -> str:
    """Regular expression of a training run's name: a method, optionally ``__seed{N}``."""
    return f"({'|'.join(sorted(NEEDS))})(__seed[0-9]+)?"
