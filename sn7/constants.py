"""Mask values shared by every layer (data, losses, metrics, outputs)."""

BACKGROUND = 0
BUILDING = 1
IGNORE = 255  # alpha == 0 or unusable data (UDM): excluded from every loss and metric
