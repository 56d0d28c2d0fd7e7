"""Media decoding: safe sources, probing, video sampling, images, audio (PyAV / FFmpeg).

Public API::

    probe(source, limits=None) -> MediaInfo
    decode_video(source, sampling=Sampling(), limits=None, *, backend="pyav",
                 backgrounds=("white",)) -> DecodedVideo
    decode_image(source, limits=None, *, background=255) -> Frame  # also (H, W, 3) uint8 arrays / PIL images
    decode_image_views(source, limits=None, backgrounds=("white", "black")) -> [(page, Frame)]
    decode_audio(source, limits=None, sample_rate=16000) -> np.ndarray (float32 mono)
    audio_channels(source, limits=None, *, track=0) -> int   # declared channels, no decoding
    audio_from_array(samples, sample_rate=16000, limits=None) -> np.ndarray   # PCM already in memory
    decode_subtitles(source, limits=None) -> [Caption(start, end, text)]   # text subtitle tracks
    has_audio(source, limits=None) -> bool

``source`` is a local path (str / PathLike), bytes-like, or a binary file object; URLs, protocols,
playlists and concat lists raise ForbiddenSourceError.  All errors are ``engine.errors`` types.
"""

from .audio import audio_channels, audio_from_array, decode_audio, has_audio
from .decord_source import DecordSource, decord_available
from .frame import FRAME_FORMATS, Frame, frame_from_array, frame_from_av, frame_to_rgb
from .image import decode_image, decode_image_views
from .limits import DEFAULT_LIMITS, Limits
from .probe import MediaInfo, probe
from .source import open_container
from .subtitles import Caption, decode_subtitles
from .video import SAMPLING_MODES, DecodedVideo, Sampling, decode_video

__all__ = [
    "Frame", "FRAME_FORMATS", "frame_from_av", "frame_from_array", "frame_to_rgb",
    "Limits", "DEFAULT_LIMITS", "open_container",
    "MediaInfo", "probe",
    "Sampling", "SAMPLING_MODES", "DecodedVideo", "decode_video",
    "decode_image", "decode_image_views", "decode_audio", "audio_channels", "audio_from_array", "has_audio",
    "Caption", "decode_subtitles",
    "DecordSource", "decord_available",
]
