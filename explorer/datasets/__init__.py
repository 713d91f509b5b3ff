"""Datasets: the generic ``Dataset`` and image I/O (``core``), one loader module per source (``digits``,
``shapes``, ``icons``, ``emoji``, ``folder``) and the registry that names them. Layer order inside:
core → loaders → registry; this package's public names are re-exported here."""
from .core import IMAGE_EXTENSIONS, Dataset, ImageError, open_image, save_split, stratified_split, to_model_tensor
from .digits import load_digits
from .folder import MIN_IMAGES, load_image_folder
from .registry import EMBEDDED, data_missing, load_dataset
from .shapes import load_shapes

__all__ = ["IMAGE_EXTENSIONS", "MIN_IMAGES", "EMBEDDED", "Dataset", "ImageError", "data_missing", "load_dataset",
           "load_digits", "load_image_folder", "load_shapes", "open_image", "save_split", "stratified_split",
           "to_model_tensor"]
