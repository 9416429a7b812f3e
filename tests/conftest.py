"""Test-wide settings: offscreen Qt, our own settings scope, no network."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests must never reach a hub; mlx-lm and huggingface_hub honour these.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
