"""Shared fixtures: real data on disk, small and fast; nothing downloads."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_CAPTCHAS = PROJECT_ROOT.parent / "shared" / "data" / "captcha_images_v2"


@pytest.fixture(scope="session")
def real_captchas() -> pathlib.Path:
    if not REAL_CAPTCHAS.is_dir():
        pytest.skip(f"real captchas not found at {REAL_CAPTCHAS} (../shared/data is absent)")
    return REAL_CAPTCHAS
