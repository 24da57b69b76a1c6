"""Class-conditional generation (RadioGAN): the conditioning layers, the class draws and their
refusals, and a conditional DCGAN that learns to draw the class it is given on a toy set where
the classes are trivially separable, judged by the domain classifier's network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from models.data.labels import DEFECT_CLASSES
from models.methods.base import StageInputs
from models.methods.conditional import DCGANConditional, sampling_classes
from models.methods.dcgan import DCGANSettings
from models.nets.conditioning import ClassChannel, ClassInput
from models.nets.feature_cnn import FeatureCNN
from models.nets.init import init_weights
from models.training.loop import in_eval_mode
from models.training.settings import LoopSettings
from tests.models.fixtures import LabelledImages, train_in_memory

SIZE = 16


def toy_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three trivially separable classes of 16 px images (class numbers 0, 1, 2): a bright
    square in the lower-left quadrant, one in the upper-right, a bright horizontal bar; on a
    dark background with a little noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.full((n, 1, SIZE, SIZE), -0.8) + 0.1 * torch.randn(n, 1, SIZE, SIZE,
                                                                      generator=g)
    images[labels == 0, :, 2:7, 2:7] = 0.8
    images[labels == 1, :, 9:14, 9:14] = 0.8
    images[labels == 2, :, 7:9, 1:15] = 0.8
    return images.clamp(-1, 1), labels


def test_class_layers_concatenate_an_embedding_and_a_plane():
    gen = torch.Generator().manual_seed(0)
    layer = ClassInput(6, 5)
    init_weights(layer, gen)
    z, y = torch.randn(4, 3), torch.tensor([0, 5, 5, 2])
    out = layer(z, y)
    assert out.shape == (4, 8)
    assert torch.equal(out[:, :3], z)
    assert torch.equal(out[:, 3:], layer.embed.weight[y])  # the embedding row of each class
    plane = ClassChannel(6, 8, 5)
    x = torch.randn(4, 1, 8, 8)
    both = plane(x, y)
    expected = (plane.embed.weight[y] @ plane.dense.weight.T + plane.dense.bias).view(4, 8, 8)
    assert both.shape == (4, 2, 8, 8) and torch.equal(both[:, 0], x[:, 0])
    assert torch.allclose(both[:, 1], expected, atol=1e-6)
    assert torch.equal(both[1, 1], both[2, 1])  # one plane per class


@pytest.mark.parametrize("labels", [torch.tensor([0, 6]), torch.tensor([-1]),
                                    torch.tensor([0.0, 1.0]), torch.tensor([[0, 1]])])
def test_class_layers_refuse_labels_that_are_not_classes(labels):
    with pytest.raises(ValueError, match="class labels"):
        ClassInput(6)(torch.zeros(len(labels.reshape(-1)), 2), labels)


def test_class_draws_follow_the_training_frequencies():
    counts = [60, 0, 10, 0, 20, 10]
    drawn = sampling_classes(20000, counts, torch.Generator().manual_seed(1))
    observed = np.bincount(drawn.numpy(), minlength=6)
    assert observed[1] == observed[3] == 0  # never a class the training split lacks
    present = np.asarray(counts) > 0
    expected = np.asarray(counts)[present] / sum(counts) * 20000
    assert chisquare(observed[present], expected).pvalue > 1e-3


def test_wanted_classes_are_made_in_equal_numbers_and_absent_ones_refused():
    counts = [60, 0, 10, 0, 20, 10]
    drawn = sampling_classes(9, counts, torch.Generator(), ["none", "bubble", "hole"])
    assert np.bincount(drawn.numpy(), minlength=6).tolist() == [3, 0, 3, 0, 0, 3]
    with pytest.raises(ValueError, match=r"generate\.classes.*no 'crack' image.*cannot"):
        sampling_classes(4, counts, torch.Generator(), ["crack"])
    with pytest.raises(ValueError, match=r"generate\.classes.*'rust' is not a defect class"):
        sampling_classes(4, counts, torch.Generator(), ["rust"])


def _classifier(images: torch.Tensor, labels: torch.Tensor) -> FeatureCNN:
    """The domain classifier's network (Table 1's feature network) trained on the toy set."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    net = FeatureCNN(3, widths=(8, 16, 16, 16), embed_dim=16)
    init_weights(net, gen)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        pick = torch.randint(0, len(images), (32,), generator=gen)
        loss = F.cross_entropy(net(images[pick]), labels[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_the_conditional_dcgan_draws_the_class_it_is_given():
    images, labels = toy_classes(96, seed=0)
    source = LabelledImages(images, labels)
    settings = DCGANSettings(latent_dim=16, generator_channels=16, discriminator_channels=16,
                             gan_loss="bce")
    method = DCGANConditional.build(settings, StageInputs({"real": source}, SIZE),
                                    torch.Generator().manual_seed(0))
    assert method.arch["class_counts"] == [32, 32, 32, 0, 0, 0]
    loop = LoopSettings(steps=400, batch_size=32, lr=2e-4, betas=(0.5, 0.999), seed=0,
                        device="cpu")
    train_in_memory(method, source, loop)
    judge = _classifier(*toy_classes(300, seed=1))
    held, held_labels = toy_classes(90, seed=2)
    with torch.no_grad():
        assert (judge(held).argmax(1) == held_labels).float().mean() > 0.95  # a fair judge
    rng = torch.Generator().manual_seed(3)
    inputs = method.sampling_inputs(300, {}, rng, ["none", "crack", "hole"])
    with torch.no_grad(), in_eval_mode(method):
        fake = method.sample(inputs)
        called = judge(fake).argmax(1)
    per_class = [(called[inputs["label"] == k] == k).float().mean().item() for k in range(3)]
    # Chance is 1/3: every class must be drawn as itself far more often than that.
    assert min(per_class) > 0.8, per_class
    # And the class, not the noise, decides: the same noise under two classes differs.
    z = inputs["z"][:8]
    with torch.no_grad(), in_eval_mode(method):
        a = method.sample({"z": z, "label": torch.zeros(8, dtype=torch.int64)})
        b = method.sample({"z": z, "label": torch.ones(8, dtype=torch.int64)})
    assert (judge(a).argmax(1) == 0).all() and (judge(b).argmax(1) == 1).all()
    assert len(DEFECT_CLASSES) == 6
