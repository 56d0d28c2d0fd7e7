"""Media decoding: safe sources, probing, video sampling, images, audio (PyAV / FFmpeg)."""

from .frame import FRAME_FORMATS, Frame, frame_from_array, frame_from_av, frame_to_rgb
from .limits import DEFAULT_LIMITS, Limits
from .source import open_container
from .video import DecodedVideo, Sampling, decode_video

__all__ = [
    "Frame", "FRAME_FORMATS", "frame_from_av", "frame_from_array", "frame_to_rgb",
    "Limits", "DEFAULT_LIMITS", "open_container",
    "Sampling", "DecodedVideo", "decode_video",
]
