"""The shipped generation presets: webui YAML with only keys the webui knows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))

# modules/presets.py default_preset_values of the webui (May 2026), with their types.
WEBUI_PRESET_KEYS = {
    "temperature": float, "dynatemp_low": float, "dynatemp_high": float, "dynatemp_exponent": float,
    "smoothing_factor": float, "smoothing_curve": float, "top_p": float, "top_k": int, "min_p": float,
    "top_n_sigma": float, "typical_p": float, "xtc_threshold": float, "xtc_probability": float,
    "epsilon_cutoff": float, "eta_cutoff": float, "tfs": float, "top_a": float, "adaptive_target": float,
    "adaptive_decay": float, "dry_multiplier": float, "dry_allowed_length": int, "dry_base": float,
    "repetition_penalty": float, "frequency_penalty": float, "presence_penalty": float,
    "encoder_repetition_penalty": float, "no_repeat_ngram_size": int, "repetition_penalty_range": int,
    "penalty_alpha": float, "guidance_scale": float, "mirostat_mode": int, "mirostat_tau": float,
    "mirostat_eta": float, "do_sample": bool, "dynamic_temperature": bool, "temperature_last": bool,
    "sampler_priority": str, "dry_sequence_breakers": str,
}


def test_one_preset_per_template():
    templates = {p.stem for p in (ROOT / "instruction-templates").glob("*.yaml")}
    assert {p.stem for p in PRESETS} == templates


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_uses_only_known_keys_with_sane_values(path):
    preset = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(preset, dict) and preset
    unknown = set(preset) - set(WEBUI_PRESET_KEYS)
    assert not unknown, f"{path.name}: keys the webui does not know: {unknown}"
    for key, value in preset.items():
        expected = WEBUI_PRESET_KEYS[key]
        assert isinstance(value, (int, float) if expected is float else expected), f"{path.name}: {key}"
    # Contrastive search left transformers core in v5; no shipped preset may depend on it.
    assert preset.get("penalty_alpha", 0) == 0
    assert 0 < preset["temperature"] <= 1.0 and 0 < preset.get("top_p", 1) <= 1
    # Every value is justified by a comment in the file.
    assert path.read_text(encoding="utf-8").count("#") >= 2


def test_key_list_matches_the_webui_source_when_available():
    """Guards the hand-copied key list against the real webui when TGW_DIR is set."""
    import os
    import re

    tgw = os.environ.get("TGW_DIR")
    if not tgw:
        pytest.skip("TGW_DIR not set: the key list above is the webui's of May 2026")
    source = (Path(tgw) / "modules" / "presets.py").read_text(encoding="utf-8")
    block = source.split("default_preset_values = {", 1)[1].split("\n}", 1)[0]
    keys = set(re.findall(r"'(\w+)':", block))
    assert set(WEBUI_PRESET_KEYS) == keys
