"""Boundary-aware targets (sn7.models.heads, sn7.models.losses): building / edge / contact heads,
their targets from the mask, and the one map every stage reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sn7.constants import IGNORE
from sn7.errors import ConfigError
from sn7.models.heads import building_probability
from sn7.models.losses import SegmentationLoss, boundary_targets
from sn7.models.tiny_unet import TinyUNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two 3x4 buildings one pixel apart (column 5), a lone 1x1 building far off, ignore at the bottom.
MASK = np.zeros((12, 14), np.uint8)
MASK[1:4, 1:5] = 1
MASK[1:4, 6:10] = 1
MASK[9, 12] = 1
MASK[11, :] = IGNORE


def targets(mask: np.ndarray = MASK) -> tuple[np.ndarray, np.ndarray]:
    edge, contact = boundary_targets(torch.from_numpy(mask)[None].long())
    return edge[0].numpy(), contact[0].numpy()


def test_edges_are_the_outline_and_contacts_the_gap_between_close_buildings():
    edge, contact = targets()
    inner = np.zeros_like(edge)
    inner[2, 2:4] = inner[2, 7:9] = True  # the only pixels with no background neighbour
    assert np.array_equal(edge, (MASK == 1) & ~inner)
    expected = np.zeros_like(contact)
    expected[1:4, 5] = True  # buildings on both sides within 2 px (rows 0 and 4: one side only)
    assert np.array_equal(contact, expected)
    assert not (edge | contact)[MASK == IGNORE].any()


def test_ignore_neighbours_make_no_edge():
    mask = np.full((5, 5), IGNORE, np.uint8)
    mask[1:4, 1:4] = 1
    edge, contact = targets(mask)
    assert not edge.any() and not contact.any()


def test_the_map_is_building_probability_with_contacts_cut_out():
    logits = torch.randn(2, 3, 8, 8)
    expected = torch.sigmoid(logits[:, 0]) * (1 - torch.sigmoid(logits[:, 2]))
    torch.testing.assert_close(building_probability(logits), expected)
    one = logits[:, :1]
    torch.testing.assert_close(building_probability(one), torch.sigmoid(one[:, 0]))
    with pytest.raises(ConfigError, match=r"model\.out_ch=2"):
        building_probability(logits[:, :2])


def loss_of(logits: torch.Tensor, mask: np.ndarray = MASK, **weights) -> torch.Tensor:
    loss = SegmentationLoss(dice_weight=1.0, **weights)
    return loss(logits, torch.from_numpy(mask)[None].long())


def test_every_head_learns_from_its_own_target_and_ignore_pixels_teach_nothing():
    logits = torch.zeros(1, 3, *MASK.shape, requires_grad=True)
    loss_of(logits, edge_weight=1.0, contact_weight=0.5).backward()
    grad = logits.grad[0]
    edge, contact = targets()
    valid = MASK != IGNORE
    assert (grad[0][torch.from_numpy(valid)] != 0).all()  # building head: every valid pixel
    assert (grad[1:][:, torch.from_numpy(~valid)] == 0).all()
    # BCE pushes the edge head up on edge pixels and down elsewhere; contact likewise
    assert (grad[1][torch.from_numpy(edge)] < 0).all() and (
        grad[1][torch.from_numpy(valid & ~edge)] > 0
    ).all()
    assert (grad[2][torch.from_numpy(contact)] < 0).all()


def test_a_head_with_zero_weight_gets_no_gradient():
    logits = torch.zeros(1, 3, *MASK.shape, requires_grad=True)
    loss_of(logits, edge_weight=0.0, contact_weight=1.0).backward()
    assert (logits.grad[0, 1] == 0).all() and (logits.grad[0, 2] != 0).any()


def test_heads_and_weights_must_agree():
    with pytest.raises(ConfigError, match="3-output model needs"):
        loss_of(torch.zeros(1, 3, *MASK.shape))
    with pytest.raises(ConfigError, match="need a 3-output model"):
        loss_of(torch.zeros(1, 1, *MASK.shape), edge_weight=1.0)
    with pytest.raises(ConfigError, match="must be >= 0"):
        SegmentationLoss(contact_weight=-1.0)


def test_an_all_ignore_batch_gives_zero_boundary_loss():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = loss_of(logits, np.full((4, 4), IGNORE, np.uint8), edge_weight=1.0, contact_weight=1.0)
    assert float(loss.detach()) == 0.0
    loss.backward()  # the graph stays connected


def test_tiny_unet_has_one_logit_map_per_head():
    model = TinyUNet(in_ch=4, base=2, depth=2, out_ch=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 4, 17, 33)).shape == (2, 3, 17, 33)
    with pytest.raises(ConfigError, match=r"model\.out_ch=2"):
        TinyUNet(out_ch=2)
