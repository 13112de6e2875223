"""The multi-adapter guard: what to tell the user, and offer, when two or more adapters are picked.

The webui cannot run several LoRA adapters at once (modules/LoRA.py with PEFT 0.18): with
equal ranks it crashes with `max() arg is an empty sequence` and leaves only the first
active; with different ranks it keeps only the first and says so only in the console; an
adapter added later is ignored. `decide_guard` says so in Spanish and offers one adapter
that does what the selection meant: an earlier `fusion-<a>+<b>` of exactly these adapters,
else the family's shipped `<prefix>-fusionado`; and whether "Fusionar ahora" can make one
(`fuse_selection`, the bundle's exact fuser). No webui needed:

    decision = decide_guard(["llama2-instrucciones", "llama2-leyes-ec"], infos)
    decision.replacement  # 'llama2-fusionado'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.adapters.folder import AdapterNameError, resolve_adapter

from .adapters import AdapterInfo

FUSED_TASK = "fusionado"
NO_ADAPTER = "None"  # the LoRA menu's empty choice


@dataclass(frozen=True)
class GuardDecision:
    selected: tuple[str, ...]
    triggered: bool  # two or more adapters selected or active
    message: str = ""  # Spanish, for the panel, the toast and the console ("" when not triggered)
    replacement: str | None = None  # an installed adapter to load instead
    fusion_name: str | None = None  # folder name "Fusionar ahora" would create
    can_fuse: bool = False
    fuse_blocker: str = ""  # why fusing is not offered (Spanish), when can_fuse is False


def fusion_name(names: tuple[str, ...]) -> str:
    """The folder name of the fusion of `names`: fusion-<a>+<b>, in the selection's order."""
    return "fusion-" + "+".join(names)


def _failure(selected: tuple[str, ...], infos: dict[str, AdapterInfo]) -> str:
    ranks = {infos[name].rank for name in selected if name in infos}
    if len(ranks) == 1:
        return (f"con rangos iguales (r={ranks.pop()}) la webui falla con «max() arg is an empty sequence» "
                f"y deja activo solo «{selected[0]}»")
    return f"con rangos distintos la webui deja activo solo «{selected[0]}» y el resto no hace nada"


def _replacement(selected: tuple[str, ...], infos: dict[str, AdapterInfo]) -> tuple[str | None, str]:
    """(adapter to load instead, Spanish note on how it relates to the selection)."""
    earlier = fusion_name(selected)
    if earlier in infos:
        return earlier, "la fusión exacta de esta selección, creada antes"
    families = {infos[name].family if name in infos else None for name in selected}
    family = families.pop() if len(families) == 1 else None
    if family is None:
        return None, ""
    fused = sorted(info.name for info in infos.values()
                   if info.family == family and info.task == FUSED_TASK and info.name not in selected)
    if not fused:
        return None, ""
    prefixes = {name.removesuffix("-" + (infos[name].task or "")) for name in selected}
    preferred = [name for name in fused if any(name == f"{prefix}-{FUSED_TASK}" for prefix in prefixes)] or fused
    best = next((n for n in preferred if set(infos[n].sources) == set(selected)), preferred[0])
    sources = infos[best].sources
    if set(sources) == set(selected):
        return best, "une exactamente estos adaptadores en uno solo"
    made_of = " + ".join(sources) if sources else "las tareas de la familia"
    return best, f"el adaptador fusionado de la familia {family}: {made_of}"


def decide_guard(selected_names, adapter_infos: dict[str, AdapterInfo], allow_writes: bool = True) -> GuardDecision:
    """What the guard says and offers for the adapters selected in the LoRA menu (or active)."""
    selected = tuple(dict.fromkeys(n for n in selected_names or () if n and n != NO_ADAPTER))
    if len(selected) < 2:
        return GuardDecision(selected, triggered=False)
    replacement, note = _replacement(selected, adapter_infos)
    families = {adapter_infos[n].family for n in selected if n in adapter_infos and adapter_infos[n].family}
    missing = [n for n in selected if n not in adapter_infos]
    if not allow_writes:
        blocker = "en modo multiusuario (--multi-user) la extensión no escribe archivos"
    elif missing:
        blocker = "no se encuentran en la carpeta de adaptadores: " + ", ".join(missing)
    elif len(families) > 1:
        blocker = "son de familias distintas (" + ", ".join(sorted(families)) + ") y no se pueden fusionar"
    else:
        blocker = ""
    offer = [f"carga «{replacement}» ({note})" if replacement else "",
             f"pulsa «Fusionar ahora» para crear «{fusion_name(selected)}» (fusión exacta)" if not blocker else ""]
    offer = " o ".join(part for part in offer if part)
    message = (f"Has elegido {len(selected)} adaptadores a la vez ({', '.join(selected)}). La webui no sabe usarlos "
               f"juntos: {_failure(selected, adapter_infos)}."
               + (f" Solución: {offer}." if offer else " Elige un solo adaptador.")
               + (f" No se puede fusionar: {blocker}." if blocker else ""))
    return GuardDecision(selected, True, message, replacement, fusion_name(selected), not blocker, blocker)


# why a name is not an adapter of the LoRA folder (training/adapters/folder.py: AdapterNameError.reason)
NAME_REASONS = {
    "empty": "está vacío",
    "path": "es una ruta, no el nombre de una carpeta",
    "parent": "sale de la carpeta de adaptadores («..»)",
    "missing": "no existe en la carpeta de adaptadores",
    "outside": "es un enlace a una carpeta fuera de la carpeta de adaptadores",
}


def _inside(lora_dir: Path, name: str, must_exist: bool = True) -> Path:
    """lora_dir/name, refused in Spanish unless it stays inside lora_dir (the bundle's door)."""
    try:
        return resolve_adapter(lora_dir, name, must_exist)
    except AdapterNameError as err:
        raise ValueError(f"«{name}» no es un adaptador de {lora_dir}: {NAME_REASONS[err.reason]}") from None


def fuse_selection(lora_dir: Path, names: tuple[str, ...]):
    """Fuse the adapters `names` of lora_dir exactly (rank-concatenation) into lora_dir/fusion-<a>+<b>.

    Every name, and the output's, must be a folder inside lora_dir (no `..`, paths or links out
    of it), checked before anything is read or written. An earlier fusion of the same names (ours:
    it has a training record) is replaced; any other folder of that name is refused by the output
    rule (training/files.py).
    """
    from training.adapters.fuse import FuseSettings, fuse_adapters

    sources = [_inside(lora_dir, name) for name in names]
    out = _inside(lora_dir, fusion_name(names), must_exist=False)
    return fuse_adapters(FuseSettings(adapters=sources, out=out, method="cat", replace=True))
