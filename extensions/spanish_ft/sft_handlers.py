"""Event handlers of the adapter panel: status, profile, multi-adapter guard, fusion.

Each handler returns gradio updates for the components sft_ui.py wires it to, in the order
its docstring gives: "profile" is the webui's 4 controls of sft_ui.PROFILE_OUTPUTS, "guard"
the guard's markdown and its two buttons. Decisions come from the pure modules (sft_profile,
sft_guard, sft_adapters); the webui's state from sft_webui. Messages are Spanish; what
goes to a toast also goes to the console.
"""

from __future__ import annotations

import gradio as gr
import sft_webui as webui
from sft_adapters import check_base_model, model_family
from sft_guard import decide_guard, fuse_selection
from sft_profile import INSTRUCT_MODE, ProfileError, profile_summary, should_auto_apply


def no_change(count: int) -> tuple:
    """Updates that leave `count` components as they are (fresh dicts: gradio pops keys from them)."""
    return tuple(gr.update() for _ in range(count))


def warn(message: str) -> None:
    """A toast in the browser and a warning in the webui's console."""
    webui.logger.warning(f"spanish_ft: {message}")
    gr.Warning(message)


def status_markdown(extra: str = "") -> str:
    """What is active now, whether it fits the loaded model, and any extra note."""
    active, infos, config = webui.active_adapters(), webui.adapter_infos(), webui.loaded_model_config()
    model = webui.shared.model_name
    family = model_family(config) if config else None
    lines = [f"**Modelo:** `{model}`" + (f" (familia {family})" if family else ""), "",
             "**Adaptadores activos:** " + (", ".join(f"`{name}`" for name in active) or "ninguno"), ""]
    for name in active:
        info = infos.get(name)
        if info is None or not info.has_record:
            lines.append(f"- `{name}`: no es un adaptador de spanish_ft (sin registro de entrenamiento)")
            continue
        lines.append(f"- `{name}`: familia {info.family}, tarea {info.task}, plantilla `{info.template}`, "
                     f"preset `{info.preset}`")
        lines += [f"  - ⚠️ {problem}" for problem in (check_base_model(info, config, model) if config else [])]
    if len(active) > 1:
        lines.append("- ⚠️ " + decide_guard(active, infos).message)
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def profile_updates():
    """(4 profile control updates, summary) for the single active adapter; ProfileError otherwise."""
    active = webui.active_adapters()
    if len(active) != 1:
        raise ProfileError("aplica exactamente un adaptador en Model → LoRA(s) para usar su perfil "
                           f"(activos ahora: {', '.join(active) or 'ninguno'})")
    info = webui.adapter_infos().get(active[0])
    if info is None:
        raise ProfileError(f"«{active[0]}» no está en la carpeta de adaptadores {webui.lora_dir()}")
    profile = webui.resolve_active_profile(info)
    text = webui.template_text(profile.template)
    summary = profile_summary(profile)
    webui.logger.info(f"spanish_ft: {summary}")
    return (gr.update(value=profile.template), text, gr.update(value=profile.preset), INSTRUCT_MODE), summary


def apply_profile_click():
    """"Aplicar perfil": outputs profile + status."""
    try:
        updates, summary = profile_updates()
    except ValueError as err:
        warn(str(err))
        return (*no_change(4), status_markdown(f"⚠️ {err}"))
    return (*updates, status_markdown(f"**Hecho.** {summary}"))


def guard_updates(decision):
    """(guard markdown, "Cargar el adaptador fusionado" button, "Fusionar ahora" button)."""
    if not decision.triggered:
        return gr.update(value="", visible=False), gr.update(visible=False), gr.update(visible=False)
    fused = gr.update(visible=True, interactive=decision.replacement is not None and not webui.shared.args.multi_user,
                      value=f"Cargar «{decision.replacement}»" if decision.replacement
                      else "Cargar el adaptador fusionado")
    fuse = gr.update(visible=True, interactive=decision.can_fuse,
                     value=f"Fusionar ahora → «{decision.fusion_name}»")
    return gr.update(value=f"### ⚠️ Varios adaptadores\n\n{decision.message}", visible=True), fused, fuse


def status_changed(params: dict, last_seen):
    """model_status changed (a LoRA or model load finished): auto-apply the profile once per new adapter.

    Outputs: profile + status + last_seen state + guard.
    """
    active = webui.active_adapters()
    if active == last_seen:  # a status message, not a new adapter set: keep the panel as it is
        return (*no_change(5), last_seen, *no_change(3))
    decision = decide_guard(active, webui.adapter_infos(), allow_writes=not webui.shared.args.multi_user)
    if decision.triggered:
        warn(decision.message)
    updates, note = no_change(4), ""
    if params.get("auto_profile", True) and should_auto_apply(active, last_seen):
        try:
            updates, summary = profile_updates()
            note = f"**Hecho.** {summary}"
        except ValueError as err:
            warn(str(err))
            note = f"⚠️ {err}"
    return (*updates, status_markdown(note), active, *guard_updates(decision))


def lora_selection_changed(selected):
    """The LoRA menu's selection changed (not yet applied): warn before a broken multi-adapter load.

    Outputs: guard + model_status.
    """
    infos = webui.adapter_infos()
    decision = decide_guard(selected, infos, allow_writes=not webui.shared.args.multi_user)
    status = gr.update()
    if decision.triggered:
        warn(decision.message)
        status = f"⚠️ spanish_ft: {decision.message} (pestaña spanish_ft → Adaptador)"
    elif decision.selected and decision.selected[0] in infos and (config := webui.loaded_model_config()):
        problems = check_base_model(infos[decision.selected[0]], config, webui.shared.model_name)
        if problems:
            warn(" ".join(problems))
            status = "⚠️ spanish_ft: " + " ".join(problems)
    return (*guard_updates(decision), status)


def load_replacement_click(selected):
    """"Cargar el adaptador fusionado": outputs lora_menu + model_status + guard."""
    decision = decide_guard(selected or webui.active_adapters(), webui.adapter_infos())
    if webui.shared.args.multi_user or decision.replacement is None:
        warn("no hay un adaptador fusionado que cargar" if decision.replacement is None
             else "en modo multiusuario la extensión no cambia los adaptadores")
        return *no_change(2), *guard_updates(decision)
    webui.set_active_adapters((decision.replacement,))
    status = f"spanish_ft: cargado «{decision.replacement}» en lugar de {', '.join(decision.selected)}."
    webui.logger.info(status)
    return gr.update(value=[decision.replacement]), status, *guard_updates(decide_guard((), {}))


def fuse_now_click(selected):
    """"Fusionar ahora": fuse the selection exactly, load it; outputs lora_menu + model_status + guard."""
    decision = decide_guard(selected or webui.active_adapters(), webui.adapter_infos(),
                            allow_writes=not webui.shared.args.multi_user)
    if not decision.can_fuse:
        warn(f"no se puede fusionar: {decision.fuse_blocker or 'elige al menos dos adaptadores'}")
        return *no_change(2), *guard_updates(decision)
    try:
        result = fuse_selection(webui.lora_dir(), decision.selected)
    except (ValueError, OSError) as err:
        warn(f"la fusión falló: {err}")
        return *no_change(2), *guard_updates(decision)
    name = result.out_dir.name
    webui.set_active_adapters((name,))
    status = (f"spanish_ft: fusionados {', '.join(decision.selected)} en «{name}» (exacto, r={result.rank}) "
              f"y cargado en lugar de la selección.")
    webui.logger.info(status)
    return (gr.update(choices=webui.available_loras(), value=[name]), status, *guard_updates(decide_guard((), {})))
