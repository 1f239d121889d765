"""DUIIT: discriminative unpaired image-to-image translation for cross-modality data augmentation."""

__version__ = "0.1.0"
