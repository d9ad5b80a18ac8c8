"""One exception hierarchy for the whole project.

Every error the firmware, simulator, model compiler or base consumer raises on
purpose derives from :class:`BodycamError`, so command-line entry points can turn
them into one-line messages and a non-zero exit instead of a traceback.
"""

from __future__ import annotations


class BodycamError(Exception):
    """Base class of every deliberate error in bodycam."""

    exit_code: int = 1


class ConfigError(BodycamError):
    """A configuration file or value is malformed, unknown or out of range."""

    exit_code = 2


class UsageError(BodycamError):
    """A command line argument is wrong."""

    exit_code = 2


class ClipError(BodycamError):
    """A video clip cannot be read: missing, corrupt, truncated, no video stream."""


class TruthError(BodycamError):
    """A ground-truth file is missing, malformed or does not match its clip."""


class ModelError(BodycamError):
    """A model file or its sidecar is missing, malformed or inconsistent."""


class DetectorUnavailableError(ModelError):
    """A requested detector backend (for example the Edge TPU delegate) is not available."""


class StorageError(BodycamError):
    """Footage or state cannot be written: unwritable directory, full disk."""


class HardwareError(BodycamError):
    """A hardware adapter failed or the hardware is absent."""


class MarkerError(BodycamError):
    """A marker does not follow the bodycam.marker/1 schema."""


class BrokerError(BodycamError):
    """The MQTT broker cannot be reached or refused the connection."""


class DependencyError(BodycamError):
    """An optional dependency (TensorFlow, picamera2, RPi.GPIO, ...) is not installed."""


class StartupError(BodycamError):
    """The firmware could not start (camera, model, storage; the cause is chained).

    ``bodycam run`` exits 78 (EX_CONFIG); the unit lists it in ``RestartPreventExitStatus=``,
    so a camera that cannot start says why once (``STATUS=``) instead of restarting in a loop.
    """

    exit_code = 78
