"""What a network's output channels mean, and the one building-probability map they give.

`model.out_ch` (set by the `targets` config group):
- 1 (default): the building logit, trained on the building mask.
- 3 (`targets=boundary`, the SN7 2nd and 4th places' body / edge / contact targets): building,
  edge (building pixels on a building's outline) and contact (background between two buildings
  at most 2 px apart), each a sigmoid logit; targets from the mask (sn7.models.losses).

Every later stage (thresholds, trackers, GeoTIFFs, the watershed of `post.separate`) reads one map,
`building_probability`: p_building x (1 - p_contact), so the network's own gap prediction cuts
neighbours apart, and the watershed's seeds (map >= post.seed_threshold, eroded) are building
bodies. The edge head is boundary supervision only: cutting edges out of the map would remove
most of a 3-px building at SN7's 4.8 m.
"""

from __future__ import annotations

import torch

from sn7.errors import ConfigError

OUT_CHANNELS = (1, 3)
BUILDING_CH, EDGE_CH, CONTACT_CH = 0, 1, 2


def check_out_channels(n: int) -> None:
    if n not in OUT_CHANNELS:
        raise ConfigError(
            f"model.out_ch={n}: sn7 reads 1 (building) or 3 (building, edge, contact) outputs"
        )


def building_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, H, W) float32 probability of the map every stage thresholds."""
    check_out_channels(logits.shape[1])
    prob = torch.sigmoid(logits[:, BUILDING_CH].float())
    if logits.shape[1] == 3:
        prob = prob * (1 - torch.sigmoid(logits[:, CONTACT_CH].float()))
    return prob
