"""SegmentationLoss (sn7.models.losses): BCE / Dice / focal sums that never see ignore pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from sn7.constants import IGNORE
from sn7.errors import ConfigError
from sn7.models.losses import SegmentationLoss

LOSS_DIR = Path(__file__).resolve().parents[2] / "conf" / "loss"
LOSS_CHOICES = sorted(p.stem for p in LOSS_DIR.glob("*.yaml"))
WEIGHTS = [
    {"bce_weight": 1.0},
    {"bce_weight": 0.0, "dice_weight": 1.0},
    {"bce_weight": 0.0, "focal_weight": 1.0},
    {"bce_weight": 0.7, "dice_weight": 0.3, "focal_weight": 2.0, "pos_weight": 3.0},
]


def batch(seed: int = 0, shape=(3, 16, 16), ignore_frac: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    target = (torch.rand(shape, generator=g) < 0.3).long()
    target[torch.rand(shape, generator=g) < ignore_frac] = IGNORE
    return logits, target


def test_loss_choices_are_the_expected_ones():
    assert {"bce", "dice", "bce_dice", "focal", "focal_dice"} <= set(LOSS_CHOICES)


@pytest.mark.parametrize("choice", LOSS_CHOICES)
def test_each_config_choice_builds_its_terms(compose_config, choice):
    """The choice as composed (conf/loss/*.yaml inherit from bce.yaml) switches on its terms."""
    loss = instantiate(compose_config("train", [f"loss={choice}"]).loss)
    assert isinstance(loss, SegmentationLoss)
    terms = {
        "bce": loss.bce_weight > 0,
        "dice": loss.dice_weight > 0,
        "focal": loss.focal_weight > 0,
    }
    assert {name for name, on in terms.items() if on} == set(choice.split("_"))


@pytest.mark.parametrize("kwargs", WEIGHTS)
def test_ignore_pixels_change_nothing(kwargs):
    """Logits and labels under ignore can be anything: the loss and its gradient stay the same."""
    loss_fn = SegmentationLoss(**kwargs)
    logits, target = batch()
    ignore = target == IGNORE
    assert ignore.any() and (~ignore).any()

    other = logits.clone()
    other[ignore] = torch.randn(int(ignore.sum())) * 50  # wild values where nothing counts
    a, b = logits.clone().requires_grad_(), other.clone().requires_grad_()
    loss_a, loss_b = loss_fn(a, target), loss_fn(b, target)
    loss_a.backward()
    loss_b.backward()
    assert torch.isfinite(loss_a)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert (a.grad[ignore] == 0).all()

    # ... and equals the loss of the valid pixels alone
    valid = ~ignore
    alone = loss_fn(logits[valid].reshape(1, 1, -1), target[valid].reshape(1, 1, -1))
    torch.testing.assert_close(loss_a, alone)


def test_ignore_is_not_treated_as_building_or_background():
    """Turning ignore pixels into real labels must change the loss (the mask is really used)."""
    loss_fn = SegmentationLoss(bce_weight=1.0, dice_weight=1.0)
    logits, target = batch()
    as_building = target.clone()
    as_building[target == IGNORE] = 1
    as_background = target.clone()
    as_background[target == IGNORE] = 0
    base = loss_fn(logits, target)
    assert not torch.isclose(base, loss_fn(logits, as_building))
    assert not torch.isclose(base, loss_fn(logits, as_background))


def test_bce_matches_torch_on_valid_pixels():
    logits, target = batch(1)
    valid = target != IGNORE
    expected = F.binary_cross_entropy_with_logits(logits[valid], target[valid].float())
    torch.testing.assert_close(SegmentationLoss(bce_weight=1.0)(logits, target), expected)


def test_logits_with_channel_dimension_are_accepted():
    logits, target = batch(2)
    loss_fn = SegmentationLoss(bce_weight=1.0, dice_weight=1.0)
    torch.testing.assert_close(loss_fn(logits[:, None], target), loss_fn(logits, target))


def test_pos_weight_scales_building_pixels_only():
    logits, target = batch(3, ignore_frac=0.0)
    pos, neg = target == 1, target == 0
    plain = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    expected = (3.0 * plain[pos].sum() + plain[neg].sum()) / target.numel()
    got = SegmentationLoss(bce_weight=1.0, pos_weight=3.0)(logits, target)
    torch.testing.assert_close(got, expected)
    # on an all-background batch pos_weight has no effect
    zeros = torch.zeros_like(target)
    torch.testing.assert_close(
        SegmentationLoss(pos_weight=3.0)(logits, zeros), SegmentationLoss()(logits, zeros)
    )


def test_focal_with_gamma_zero_is_alpha_scaled_bce():
    logits, target = batch(4)
    bce = SegmentationLoss(bce_weight=1.0)(logits, target)
    no_alpha = SegmentationLoss(bce_weight=0.0, focal_weight=1.0, focal_gamma=0.0, focal_alpha=None)
    torch.testing.assert_close(no_alpha(logits, target), bce)

    ones, zeros = torch.ones_like(target), torch.zeros_like(target)
    focal = SegmentationLoss(bce_weight=0.0, focal_weight=1.0, focal_gamma=0.0, focal_alpha=0.25)
    bce_fn = SegmentationLoss(bce_weight=1.0)
    torch.testing.assert_close(focal(logits, ones), 0.25 * bce_fn(logits, ones))
    torch.testing.assert_close(focal(logits, zeros), 0.75 * bce_fn(logits, zeros))


def test_focal_down_weights_easy_pixels():
    """gamma > 0: confident, correct pixels contribute (much) less than under BCE."""
    target = torch.tensor([[[1, 0]]])
    easy = torch.tensor([[[4.0, -4.0]]])
    focal = SegmentationLoss(bce_weight=0.0, focal_weight=1.0, focal_gamma=2.0, focal_alpha=None)
    bce = SegmentationLoss(bce_weight=1.0)
    assert focal(easy, target) < 0.01 * bce(easy, target)
    hard = -easy
    assert focal(hard, target) > 0.9 * bce(hard, target)


def test_weighted_sum_of_terms():
    logits, target = batch(5)
    bce = SegmentationLoss(bce_weight=1.0)(logits, target)
    dice = SegmentationLoss(bce_weight=0.0, dice_weight=1.0)(logits, target)
    focal = SegmentationLoss(bce_weight=0.0, focal_weight=1.0)(logits, target)
    mixed = SegmentationLoss(bce_weight=0.5, dice_weight=2.0, focal_weight=3.0)(logits, target)
    torch.testing.assert_close(mixed, 0.5 * bce + 2.0 * dice + 3.0 * focal)


def test_dice_is_near_zero_for_a_perfect_prediction_and_high_for_the_inverse():
    _, target = batch(6)
    sure = torch.where(target == 1, 30.0, -30.0)
    dice = SegmentationLoss(bce_weight=0.0, dice_weight=1.0)
    assert dice(sure, target) < 1e-3
    assert dice(-sure, target) > 0.99


def test_dice_on_all_background_crops_is_finite_and_pushes_predictions_down():
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, :, :4] = IGNORE
    logits = torch.zeros(2, 16, 16, requires_grad=True)
    loss = SegmentationLoss(bce_weight=0.0, dice_weight=1.0)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss < 1
    valid = target != IGNORE
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[valid] > 0).all()  # descent lowers every building probability
    assert (logits.grad[~valid] == 0).all()

    # once predictions are ~0 the loss is ~0 too (no division blow-up, no stuck gradient)
    confident = torch.full((2, 16, 16), -20.0, requires_grad=True)
    small = SegmentationLoss(bce_weight=0.0, dice_weight=1.0)(confident, target)
    small.backward()
    assert small < 1e-6 and torch.isfinite(confident.grad).all()


@pytest.mark.parametrize("kwargs", WEIGHTS)
def test_all_ignore_batch_gives_zero_loss_with_a_graph(kwargs):
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), IGNORE, dtype=torch.long)
    loss = SegmentationLoss(**kwargs)(logits, target)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()  # must not raise: DDP and the optimizer still expect a backward pass
    assert logits.grad is not None and (logits.grad == 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bce_weight": -1.0},
        {"bce_weight": 1.0, "dice_weight": -0.5},
        {"bce_weight": 1.0, "focal_weight": -2.0},
        {"bce_weight": 0.0, "dice_weight": 0.0, "focal_weight": 0.0},
        {"pos_weight": 0.0},
        {"pos_weight": -3.0},
    ],
)
def test_bad_weights_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        SegmentationLoss(**kwargs)


def test_gap_pixels_are_the_background_between_close_buildings():
    from sn7.models.losses import gap_pixels

    target = torch.zeros(1, 7, 15, dtype=torch.long)
    target[0, 2:5, 1:3] = 1  # building A
    target[0, 2:5, 4:6] = 1  # building B, a 1-px gap right of A
    target[0, 2:5, 8] = 1  # building C, a 2-px gap right of B
    target[0, 2:5, 14] = 1  # building D, 5 px right of C: too far to count as a gap
    target[0, 0, 0] = 255
    expected = torch.zeros(1, 7, 15, dtype=torch.bool)
    expected[0, 2:5, 3] = True
    expected[0, 2:5, 6:8] = True
    assert torch.equal(gap_pixels(target), expected)


def test_gap_weight_raises_the_loss_only_on_gap_pixels():
    target = torch.zeros(1, 5, 5, dtype=torch.long)
    target[0, :, 1] = 1
    target[0, :, 3] = 1  # a 1-px gap in column 2
    logits = torch.zeros(1, 5, 5)
    plain = SegmentationLoss(bce_weight=1.0)(logits, target)
    weighted = SegmentationLoss(bce_weight=1.0, gap_weight=4.0)(logits, target)
    # 5 of 25 pixels are gaps with weight 5 instead of 1: mean BCE grows by (25 + 20) / 25
    assert weighted.item() == pytest.approx(plain.item() * 45 / 25)
    far = torch.zeros(1, 5, 7, dtype=torch.long)
    far[0, :, 0] = 1
    far[0, :, 6] = 1  # 5 px apart: no gap pixels, no change
    wide = torch.zeros(1, 5, 7)
    assert SegmentationLoss(gap_weight=4.0)(wide, far).item() == pytest.approx(
        SegmentationLoss()(wide, far).item()
    )
    with pytest.raises(ConfigError):
        SegmentationLoss(gap_weight=-1)
