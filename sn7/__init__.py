"""sn7: building-footprint segmentation experiments on SpaceNet 7."""

from sn7.utils.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
