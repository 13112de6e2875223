"""An adapter's profile: the instruction template, preset and chat mode it was trained for.

`resolve_profile` turns an adapter's training record into the names the webui's own
controls take (Parameters -> Instruction template, Preset; Chat -> Mode), and refuses, in
Spanish and naming the missing file and the install command, when the template or preset
is not installed: the webui would otherwise silently fall back to Alpaca or to the default
sampler values. `should_auto_apply` decides when the profile is applied on its own: once,
right after a new adapter set becomes active, so a later change by the user is kept.
No webui needed:

    profile = resolve_profile(info, available_templates, available_presets, WebuiPaths(webui, data))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .adapters import AdapterInfo

INSTRUCT_MODE = "instruct"
# (Spanish label, folder under the webui's user data) of the files a profile names
TEMPLATE = ("la plantilla de instrucciones", "instruction-templates")
PRESET = ("el preset", "presets")


class ProfileError(ValueError):
    """The profile cannot be applied; the message says why and how to fix it, in Spanish."""


@dataclass(frozen=True)
class WebuiPaths:
    webui: Path  # the webui's folder (where server.py is)
    data: Path  # its user data folder (user_data/, or the webui folder in old layouts)


@dataclass(frozen=True)
class Profile:
    adapter: str
    template: str
    preset: str
    mode: str = INSTRUCT_MODE


def resolve_profile(info: AdapterInfo, available_templates: Iterable[str], available_presets: Iterable[str],
                    paths: WebuiPaths) -> Profile:
    """The adapter's profile, or ProfileError listing every missing piece at once."""
    if not info.has_record:
        raise ProfileError(
            f"«{info.name}» no tiene registro de entrenamiento de spanish_ft (spanish_ft_record.json): "
            "elige la plantilla y el preset a mano en Parameters."
        )
    problems = []
    wanted = ((TEMPLATE, info.template, set(available_templates)), (PRESET, info.preset, set(available_presets)))
    for kind, name, available in wanted:
        if not name:
            problems.append(f"el registro de «{info.name}» no nombra su {kind[0]}")
        elif name not in available:
            problems.append(missing(kind, name, paths))
    if problems:
        raise ProfileError("No se aplicó el perfil: " + "; ".join(problems) + ". " + install_hint(paths))
    return Profile(info.name, info.template, info.preset)


def missing(kind: tuple[str, str], name: str, paths: WebuiPaths) -> str:
    """"falta la plantilla «X» (its path)": the webui itself would silently fall back to defaults."""
    label, folder = kind
    return f"falta {label} «{name}» ({paths.data / folder / (name + '.yaml')})"


def install_hint(paths: WebuiPaths) -> str:
    return f"Instala el paquete en la webui con: python install.py --webui {paths.webui}"


def profile_summary(profile: Profile) -> str:
    """A one-line Spanish description of what was applied, for the panel and the console."""
    return (f"Perfil de «{profile.adapter}» aplicado: plantilla «{profile.template}», preset «{profile.preset}», "
            f"modo {profile.mode}. Puedes cambiarlos en Parameters: la extensión no los vuelve a tocar.")


def should_auto_apply(active: tuple[str, ...], last_seen: tuple[str, ...] | None) -> bool:
    """Apply the profile on its own only when one adapter has just become active (not on every event)."""
    return len(active) == 1 and active != last_seen
