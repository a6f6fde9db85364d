"""Sample-rate conversion of a whole buffer at once (files, voice references, the CLI, the demo).

The one whole-buffer path; live audio goes through :class:`~glmtts_plugins.audio.StreamResampler`.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["resample_buffer"]


def resample_buffer(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Convert a whole 16-bit mono buffer from ``from_rate`` to ``to_rate`` with soxr's VHQ filter.

    Not for streams: each call starts from silence, so chunk by chunk it would click at every boundary
    (use :class:`~glmtts_plugins.audio.StreamResampler`).
    """
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
    out: np.ndarray = soxr.resample(samples, from_rate, to_rate, quality="VHQ")
    return out.astype("<i2").tobytes()
