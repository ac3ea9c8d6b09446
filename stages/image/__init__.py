"""The image stage: the actor portrait, decoded, checked for a human face and cropped to 512²."""

from stages.image.library import load_actor
from stages.image.load import read_image

__all__ = ["load_actor", "read_image"]
