"""From photos and video to 3D keypoints: detection (MediaPipe), handedness, lifting to
the camera frame, video reading and temporal smoothing, and a manual-placement template.

Entry points: :func:`detect_image` (image -> :class:`DetectedHands`, whose ``keypoints``
are camera-frame metres in the ``mano`` order) and :func:`detect_video`.
"""

from core.detect.pipeline import DetectedHands, VideoFrameResult, detect_image, detect_video

__all__ = ["DetectedHands", "VideoFrameResult", "detect_image", "detect_video"]
