"""Reconstruction engine: image + keypoints -> two hand meshes with interpenetration.

Public API: :class:`ReconstructionSettings`, :class:`Engine`, :func:`reconstruct`."""

from core.engine.engine import Engine, reconstruct
from core.engine.mise import ExtractionCancelled
from core.engine.settings import ReconstructionSettings, SettingsError

__all__ = ["Engine", "ExtractionCancelled", "ReconstructionSettings", "SettingsError", "reconstruct"]
