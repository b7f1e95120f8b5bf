"""Tests in real headless Chromium against a hub served by uvicorn (``pytest -m browser``)."""
