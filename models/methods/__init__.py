"""Generative methods, found by name.

Each module of this package defines one method (a :class:`~models.methods.base.Method`
subclass) and registers it with :func:`register`; :func:`method_class` looks one up. The
names are the ``train.methods`` entries of the config and the ``method`` wildcard of the
``train`` and ``generate`` rules.
"""

from __future__ import annotations

from models.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator: make a method available under ``name``."""

    def add(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
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


def run_name_pattern() -> str:
    """Regular expression of a training run's name: a method, optionally ``__seed{N}``."""
    return f"({'|'.join(method_names())})(__seed[0-9]+)?"
