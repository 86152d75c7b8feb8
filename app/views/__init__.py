"""Widgets that show the document: the 2D image view and the 3D scene."""
