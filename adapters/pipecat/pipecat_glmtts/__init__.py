"""GLM-TTS for Pipecat: ``GLMHttpTTSService``, a ``TTSService`` on the glmtts-plugins core.

Install with ``pip install "glmtts-plugins[pipecat]"``.
"""

from .tts import GLMHttpTTSService, GLMTTSSettings, error_category
from .xiaozhi import XiaozhiFrameSerializer, XiaozhiSession, XiaozhiSpeaker, XiaozhiTurns, accept_device

__all__ = ["GLMHttpTTSService", "GLMTTSSettings", "error_category"]
__all__ += ["XiaozhiFrameSerializer", "XiaozhiSession", "XiaozhiSpeaker", "XiaozhiTurns", "accept_device"]
