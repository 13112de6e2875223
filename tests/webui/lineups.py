"""The model and adapters a scratch webui holds, by name (test helper, not shipped).

Two line-ups: TINY, a tiny random llama with tiny adapters made on the spot (fast, for the
integration test), and DEMO, the CPU demo model Gemma-3-270M with the bundle's shipped demo
adapters (loras/gemma3-270m-*). The family gives the instruction template and the preset the
extension should apply; the preset's own file gives the values the user should then see.

    DEMO.fused        # 'gemma3-270m-fusionado'
    DEMO.preset       # 'spanish_ft-Gemma'
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.families import FAMILIES  # noqa: E402


@dataclass(frozen=True)
class Lineup:
    model: str  # folder name under the webui's models/
    family: str  # a key of training.families.FAMILIES
    singles: tuple[str, str]  # the family's two single-task adapters (instrucciones, leyes-ec)
    fused: str  # the family's fused adapter

    @property
    def template(self) -> str:
        return Path(self._family().template_file).stem

    @property
    def preset(self) -> str:
        return self._family().preset

    def template_text(self) -> str:
        """The instruction template as the webui's Parameters tab shows it."""
        return self._yaml("instruction-templates", self.template)["instruction_template"]

    def preset_value(self, key: str) -> str:
        """A value of the family's preset, as the webui's number boxes show it (e.g. '0.2')."""
        return str(self._yaml("presets", self.preset)[key])

    def _family(self):
        return FAMILIES[self.family]

    @staticmethod
    def _yaml(folder: str, name: str) -> dict:
        return yaml.safe_load((ROOT / folder / f"{name}.yaml").read_text(encoding="utf-8"))


TINY = Lineup("tiny-llama", "llama2", ("llama2-instrucciones", "llama2-leyes-ec"), "llama2-fusionado")
DEMO = Lineup("gemma3-270m", "gemma3", ("gemma3-270m-instrucciones", "gemma3-270m-leyes-ec"), "gemma3-270m-fusionado")
