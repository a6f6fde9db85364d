"""GLM-TTS for Pipecat: ``GLMHttpTTSService``, a ``TTSService`` on the glmtts-plugins core.

Install with ``pip install "glmtts-plugins[pipecat]"``.
"""

from .tts import GLMHttpTTSService, GLMTTSSettings, error_category

__all__ = ["GLMHttpTTSService", "GLMTTSSettings", "error_category"]
