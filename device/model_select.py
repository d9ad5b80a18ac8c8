"""Which model the firmware loads: the model store's active package, else the configured or shipped one.

``[models]`` in the config::

    [models]
    enabled = true                 # use packages installed with 'bodycam model install'
    trusted_keys_dir = ""          # PEM public keys of base's model-signing keys;
                                   # "" = <data_dir>/identity/trusted-models

An explicit ``[detector] model`` path wins over the store (a bench or a test pins a model).
The self-test (device/detect/selftest.py) runs on whatever model is loaded: a store package that
fails to load or fails its self-test is :class:`ModelRejected` (the caller rejects it in the store
and assembles again with the previous model); the shipped or configured model failing its
self-test raises the detector alarm and the camera keeps running on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bodycam.device.clock import Clock
from bodycam.device.detect.selftest import selftest_model
from bodycam.device.errors import ModelError
from bodycam.device.identity import trusted_keys as identity_trusted_keys
from bodycam.device.model_package import PackageError
from bodycam.device.model_store import ModelStore
from bodycam.device.settings import require

if TYPE_CHECKING:
    from bodycam.device.config import AppConfig
    from bodycam.device.detect.detector import Detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelsConfig:
    enabled: bool = True
    trusted_keys_dir: str = ""

    def __post_init__(self) -> None:
        require(isinstance(self.trusted_keys_dir, str), "models.trusted_keys_dir", "must be a path")


class ModelRejected(ModelError):
    """A store package that failed on this camera (load or self-test)."""

    def __init__(self, package: str, reason: str) -> None:
        super().__init__(f"model package {package}: {reason}")
        self.package = package
        self.reason = reason


def keys_dir(cfg: AppConfig) -> Path:
    return Path(cfg.models.trusted_keys_dir) if cfg.models.trusted_keys_dir else (
        cfg.data_dir / "identity" / "trusted-models")


def trusted_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """Base's model-signing keys the camera trusts (``identity.trusted_keys``)."""
    return identity_trusted_keys(folder, "models.trusted_keys_dir")


def open_store(cfg: AppConfig, clock: Clock) -> ModelStore | None:
    if not cfg.models.enabled:
        return None
    return ModelStore(cfg.data_dir / "models", trusted_keys(keys_dir(cfg)), clock)


def resolve(cfg: AppConfig, store: ModelStore | None) -> tuple[AppConfig, str | None]:
    """The config to assemble with and the store package its model comes from (None: not the store).

    A pending package becomes active here; a package whose files no longer verify (a damaged card)
    is rejected and the previous one tried.
    """
    if store is None or cfg.detector.model:
        return cfg, None
    active = store.activate_pending()
    while active is not None:
        try:
            path = store.model_path(active)
        except (PackageError, ModelError) as exc:
            log.error("model package %s no longer verifies (%s): rejected, using the previous model", active, exc)
            active = store.reject(active, f"no longer verifies: {exc}")
            continue
        log.info("model: package %s from the model store", active)
        return replace(cfg, detector=replace(cfg.detector, model=str(path))), active
    return cfg, None


def check_model(detector: Detector, model_path: Path, package: str | None) -> None:
    """Run the loaded model's self-test; a failing store package raises, anything else alarms."""
    spec = detector.spec
    try:
        result = selftest_model(detector, model_path, spec.raw, spec.input.shape, spec.output.scale,
                                edgetpu=detector.backend == "edgetpu")
    except ModelError as exc:
        if package is not None:
            raise ModelRejected(package, f"self-test unusable: {exc}") from exc
        _alarm(detector, f"model self-test unusable: {exc}")
        return
    if result is None:
        if package is not None:  # verify_package requires one: cannot happen for an installed package
            raise ModelRejected(package, "no self-test")
        log.info("model: %s ships without a self-test", model_path.name)
        return
    if result.ok:
        log.info("model: %s", result)
        return
    if package is not None:
        raise ModelRejected(package, str(result))
    _alarm(detector, f"model {result}")


def _alarm(detector: Any, text: str) -> None:
    log.error("ALARM %s", text)
    detector.alarm = f"{detector.alarm}; {text}" if getattr(detector, "alarm", None) else text


__all__ = ["ModelRejected", "ModelsConfig", "check_model", "keys_dir", "open_store", "resolve", "trusted_keys"]
