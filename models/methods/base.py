"""What a generative method is, for the one training loop (:mod:`models.training.loop`).

A method is a small object with three verbs (the pix2pix ``BaseModel`` idea, without the
options object): it is **built** from its typed settings and an architecture record,
it computes the **loss of one phase** of a training step, and it **samples**. The loop owns
everything else: the order and seeding of the data, the optimisers and the order in which
they step, augmentation, EMA, mixed precision, checkpoints, history and progress. So every
method, baseline or not, is trained with the same data, budget and bookkeeping.

To add a method: subclass :class:`Method` in a module of ``models/methods/``, decorate it with
``@register("name")`` (:mod:`models.methods`), add its section to ``config/schema.yaml``.
``models/methods/vae.py`` is the shortest complete example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from models.nets.init import init_weights


@dataclass
class StepContext:
    """What the loop hands a method for one phase of one step.

    Attributes
    ----------
    rng : torch.Generator
        The loop's generator (on the training device): every random draw of a step comes
        from it, so a resumed run continues the same stream.
    augment : callable
        Differentiable augmentation of images shown to a discriminator (DiffAugment; the
        identity when off), drawing from ``rng``.
    step : int
        The step being trained (0-based).
    scratch : dict
        Lives for one step: a method may keep what one phase computed for a later phase
        (the attention GAN's generator forward, made once per step as in pix2pix).
    """

    rng: torch.Generator
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    step: int
    scratch: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageInputs:
    """What the ``train`` stage gives a method to build itself from.

    Attributes
    ----------
    sources : dict
        Image sets by name (``real``, ``query``), each with ``len`` and ``batch(indices)``.
    image_size : int
        Size of the images to generate, pixels.
    files : dict of Path
        Input files by role: ``positron`` (positron.h5), ``ct`` (ct.h5), ``features``
        (features.h5), ``encoder`` (the CT VAE's final.pt).
    """

    sources: dict[str, Any]
    image_size: int
    files: dict[str, Path] = field(default_factory=dict)


class Method:
    """Base class of the generative methods.

    Class attributes
    ----------------
    name : str
        Registry name (``train.methods`` entries, the ``method`` wildcard).
    sources : tuple of str
        Image batches a step needs: ``real`` (the images to learn), and ``query`` for
        methods that take a second image set as input (the attention GAN's CT images).
    sampler_nets : tuple of str
        Networks used by :meth:`sample`; these are the ones averaged when EMA is on.
    needs : tuple of str
        Input files the method is built from besides its image sources (``features``,
        ``encoder``); the stage checks they exist before any work. Declared in
        :data:`models.methods.NEEDS` (the workflow reads it there) and set by ``register``.
    settings_class : type
        Frozen dataclass with ``from_section(config_section)``.
    data : str
        What a ``real`` batch holds: ``images`` (B, 1, H, W); ``masked``: each image with its
        defect mask as channel 1 (mask-to-image); ``paired``: channel 0 a low-count image,
        channel 1 the reference image of the same slice (enhancement).
    conditional : bool
        The method generates to a given defect class: the loop adds ``real_label`` (B,)
        to every batch, and sampling inputs carry ``label``.
    """

    name: ClassVar[str] = ""
    sources: ClassVar[tuple[str, ...]] = ("real",)
    sampler_nets: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()
    settings_class: ClassVar[type] = object
    data: ClassVar[str] = "images"
    conditional: ClassVar[bool] = False

    def __init__(self, settings: Any, arch: dict[str, Any]) -> None:
        self.settings = settings
        self.arch = dict(arch)
        self.nets = nn.ModuleDict()

    # -- building ----------------------------------------------------------------------
    @classmethod
    def build(cls, settings: Any, inputs: StageInputs, generator: torch.Generator) -> Method:
        """A new method for training: architecture from the inputs, weights drawn from
        ``generator`` (:func:`models.nets.init.init_weights`), pretrained parts loaded.
        This default suits methods whose architecture is the image size alone."""
        method = cls(settings, {"image_size": int(inputs.image_size)})
        init_weights(method.nets, generator)
        return method

    @classmethod
    def restore(cls, settings: Any, arch: dict[str, Any],
                nets_state: Mapping[str, torch.Tensor]) -> Method:
        """The method of a checkpoint: same architecture, saved weights and buffers."""
        method = cls(settings, arch)
        method.nets.load_state_dict(nets_state)
        return method

    # -- the three verbs ---------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser name -> the parameters it updates."""
        raise NotImplementedError

    def phases(self) -> list[tuple[str, int]]:
        """(optimiser name, repeats) in the order they step within one training step."""
        raise NotImplementedError

    def loss(self, phase: str, batch: Mapping[str, torch.Tensor], ctx: StepContext
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss the optimiser of ``phase`` minimises on ``batch``, and named values to
        log (detached scalars)."""
        raise NotImplementedError

    def after_step(self, phase: str) -> None:
        """Called by the loop after the optimiser of ``phase`` stepped (WGAN's weight
        clipping); nothing by default."""

    def sampling_inputs(self, n: int, sources: Mapping[str, Any], rng: torch.Generator
                        ) -> dict[str, torch.Tensor]:
        """Inputs of ``n`` samples (noise, query images), drawn from ``rng`` and the data
        ``sources``; fixed for a run's sample grids."""
        raise NotImplementedError

    def sample(self, inputs: Mapping[str, torch.Tensor],
               nets: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        """Images (n, 1, H, W) in [-1, 1] from ``inputs``; ``nets`` overrides networks by
        name (the EMA copies)."""
        raise NotImplementedError

    def latent_walk(self, inputs: Mapping[str, torch.Tensor], n_steps: int,
                    nets: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        """Images (n_steps, 1, H, W) along the straight line between the latent inputs of
        samples 0 and 1 of ``inputs`` (RadioGAN's latent walk: a generator that
        generalises changes smoothly, one that memorises jumps between training images).
        This default interpolates every input; methods whose inputs are not latent vectors
        override it."""
        t = torch.linspace(0, 1, n_steps, dtype=torch.float32)
        walk = {k: torch.lerp(v[0:1].float().expand(n_steps, *v.shape[1:]),
                              v[1:2].float().expand(n_steps, *v.shape[1:]),
                              t.view(-1, *([1] * (v.dim() - 1))).to(v.device))
                for k, v in inputs.items()}
        return self.sample(walk, nets)

    # -- helpers shared by the methods -------------------------------------------------
    def net(self, name: str, nets: Mapping[str, nn.Module] | None) -> nn.Module:
        """``nets[name]`` when given there, else this method's own network."""
        return nets[name] if nets is not None and name in nets else self.nets[name]

    def to(self, device: torch.device) -> Method:
        """Move the networks to ``device``, convolution weights in channels-last layout (the
        layout oneDNN and cuDNN convolve fastest: 1.5-2x on the 2-core CPU here)."""
        self.nets.to(device=device, memory_format=torch.channels_last)
        return self


class NoiseMethod(Method):
    """A method whose ``generator`` network maps ``z ~ N(0, I)`` of ``settings.latent_dim``
    to images (DCGAN, WGAN-GP)."""

    sampler_nets = ("generator",)

    def noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """``n`` latent vectors drawn from ``rng`` on its device."""
        return torch.randn((n, self.settings.latent_dim), generator=rng, device=rng.device)

    def sampling_inputs(self, n, sources, rng):
        return {"z": self.noise(n, rng)}

    def sample(self, inputs, nets=None):
        return self.net("generator", nets)(inputs["z"])
