"""Console-side checks: at start-up (setup) and before each generation (state_modifier).

These paths have no browser to show a toast (the webui may run with --nowebui and serve
only the API), so they log to the webui's console. At start-up, a single spanish_ft
adapter given with --lora gets its profile written into the webui's settings before the
UI is built (the controls then start with it, and API chats without an explicit template
use it); the per-generation check only warns and never changes the state.
"""

from __future__ import annotations

from . import webui
from .adapters import check_base_model
from .guard import decide_guard
from .profile import INSTRUCT_MODE, profile_summary

TEMPLATE_MODES = (INSTRUCT_MODE, "chat-instruct")


def single_bundle_adapter():
    """The info of the only active adapter when it is a spanish_ft one, else None."""
    active = webui.active_adapters()
    if len(active) != 1:
        return None
    info = webui.adapter_infos().get(active[0])
    return info if info is not None and info.has_record else None


def check_at_startup(params: dict) -> None:
    webui.logger.info("spanish_ft: extensión cargada (pestaña «spanish_ft»). Elige un adaptador <familia>-fusionado "
                      "en Model → LoRA(s).")
    check_before_generation({})
    info = single_bundle_adapter()
    if info is None or not params.get("auto_profile", True):
        return
    try:
        profile = webui.resolve_active_profile(info)
        webui.update_settings(webui.profile_settings(profile))
    except ValueError as err:
        webui.logger.warning(f"spanish_ft: {err}")
        return
    webui.logger.info(f"spanish_ft: al inicio (--lora). {profile_summary(profile)}")


def check_before_generation(state: dict) -> None:
    """Warn when several adapters are active, the base model does not fit, or the template differs."""
    active = webui.active_adapters()
    if len(active) > 1:
        webui.logger.warning(f"spanish_ft: {decide_guard(active, webui.adapter_infos()).message} Desde la API: "
                             "POST /v1/internal/lora/unload y luego /v1/internal/lora/load con un solo adaptador.")
        return
    info = single_bundle_adapter()
    config = webui.loaded_model_config()
    if info is None:
        return
    for problem in check_base_model(info, config, webui.model_name()) if config else []:
        webui.logger.warning(f"spanish_ft: {problem}")
    if state.get("mode") in TEMPLATE_MODES and info.template:
        try:
            expected = webui.template_text(info.template)
        except ValueError as err:
            webui.logger.warning(f"spanish_ft: {err}")
            return
        if state.get("instruction_template_str", expected) != expected:
            webui.logger.warning(f"spanish_ft: la plantilla en uso no es «{info.template}», con la que se entrenó "
                                 f"«{info.name}»; la respuesta puede empeorar (pestaña spanish_ft → Aplicar perfil).")
