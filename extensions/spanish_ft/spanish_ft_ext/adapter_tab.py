"""The "Adaptador" tab: its widgets, and its handlers on them and on the webui's own controls.

It shows the active adapters, applies the active spanish_ft adapter's profile in the webui's
own controls (instruction template, its text, preset, mode: the Parameters tab then shows
what generation uses), guards against loading several adapters at once, and exports the active
adapter merged into its base as a GGUF file for the llama.cpp loader ("Exportar a GGUF", a
subprocess; gguf.py). A GGUF model exported by spanish_ft gets its profile like an adapter when
the llama.cpp loader loads it (no adapter is active then). Listeners on webui components:
- `lora_menu.change`: the multi-adapter guard warns before a broken load is applied;
- `model_status.change`: fires when the webui's Apply button writes its progress and result
  there, and when a model loads; the profile is applied once per new adapter set or GGUF model.
  A second `lora_menu_apply.click` listener would be a separate event, not chained after the
  webui's (gradio has no public way to chain after another module's listener), so it could run
  before the adapter is loaded.
Handlers return `{component: update}` for the components of the `AdapterPanel` they change;
the others stay as they are. Decisions come from the logic modules (profile, guard,
adapters), the webui's state from webui.py. Messages are Spanish; what goes to a toast also
goes to the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from . import webui
from .adapters import AdapterInfo, check_base_model, model_family
from .gguf import MENU_TYPES, export_blocker, export_command, export_target, gguf_model_info, run_export
from .guard import decide_guard, fuse_selection
from .profile import INSTRUCT_MODE, ProfileError, profile_summary, should_auto_apply


@dataclass(frozen=True)
class AdapterPanel:
    """The tab's components and the webui controls its handlers read or write."""

    status: gr.Markdown  # the model, the active adapters, the last action
    guard: gr.Markdown  # the multi-adapter warning, hidden when there is none
    load_fused: gr.Button
    fuse_now: gr.Button
    last_seen: gr.State  # the adapter set the profile was last auto-applied for (per browser session)
    # the webui's own controls
    lora_menu: gr.Dropdown
    model_status: gr.Markdown
    template: gr.Dropdown
    template_text: gr.Textbox
    preset: gr.Dropdown
    mode: gr.Radio

    @property
    def profile_controls(self) -> list:
        return [self.template, self.template_text, self.preset, self.mode]

    @property
    def guard_controls(self) -> list:
        return [self.guard, self.load_fused, self.fuse_now]


def build_adapter_tab(params: dict) -> None:
    multi_user = webui.multi_user()
    gr.Markdown("Reconoce el adaptador de spanish_ft activo, aplica su plantilla, su preset y el modo *instruct*, "
                "y avisa antes de cargar varios adaptadores a la vez (la webui no sabe combinarlos).")
    status = gr.Markdown("Pulsa «Actualizar» para ver el estado.", elem_id="sft-status")
    with gr.Row():
        apply_profile = gr.Button("Aplicar perfil", variant="primary")
        refresh = gr.Button("Actualizar")
    guard = gr.Markdown(visible=False, elem_id="sft-guard")
    with gr.Row():
        load_fused = gr.Button("Cargar el adaptador fusionado", visible=False, interactive=not multi_user)
        fuse_now = gr.Button("Fusionar ahora", visible=False, interactive=not multi_user)
    build_export_section(multi_user)
    if multi_user:
        gr.Markdown("Modo multiusuario: cargar, fusionar y exportar adaptadores está desactivado (cambiaría el "
                    "modelo de todos y escribiría archivos en el servidor).")
    panel = AdapterPanel(
        status=status, guard=guard, load_fused=load_fused, fuse_now=fuse_now, last_seen=gr.State(None),
        lora_menu=webui.component("lora_menu"), model_status=webui.component("model_status"),
        template=webui.component("instruction_template"), template_text=webui.component("instruction_template_str"),
        preset=webui.component("preset_menu"), mode=webui.component("mode"))
    apply_profile.click(partial(apply_profile_click, panel), None, [*panel.profile_controls, status],
                        show_progress=False)
    refresh.click(status_markdown, None, status, show_progress=False)
    panel.model_status.change(partial(status_changed, panel, params), panel.last_seen,
                              [*panel.profile_controls, status, panel.last_seen, *panel.guard_controls],
                              show_progress=False)
    panel.lora_menu.change(partial(lora_selection_changed, panel), panel.lora_menu,
                           [*panel.guard_controls, panel.model_status], show_progress=False)
    switch_outputs = [panel.lora_menu, panel.model_status, *panel.guard_controls]
    load_fused.click(partial(load_replacement_click, panel), panel.lora_menu, switch_outputs)
    fuse_now.click(partial(fuse_now_click, panel), panel.lora_menu, switch_outputs)
    # At page load: show the state and remember the active set, so a reload does not re-apply the profile
    webui.component("interface").load(lambda: {status: status_markdown(), panel.last_seen: profile_key()},
                                      None, [status, panel.last_seen], show_progress=False)


def build_export_section(multi_user: bool) -> None:
    """"Exportar a GGUF": the active adapter merged into its base, written to the webui's models folder."""
    with gr.Accordion("Exportar a GGUF (cargador llama.cpp)", open=False):
        gr.Markdown("El cargador llama.cpp de la webui no aplica adaptadores LoRA: exporta el adaptador activo "
                    "fusionado con su modelo base como un archivo GGUF en la carpeta de modelos y cárgalo como "
                    "modelo. q4_k_m necesita `llama-quantize` de llama.cpp; q8_0, f16 y bf16 no.")
        with gr.Row():
            gguf_type = gr.Dropdown(choices=list(MENU_TYPES), value=MENU_TYPES[0], label="Tipo de GGUF")
            export = gr.Button("Exportar a GGUF", interactive=not multi_user)
        progress = gr.Markdown(elem_id="sft-gguf-export")
    export.click(export_click, gguf_type, progress)


def warn(message: str) -> None:
    """A toast in the browser and a warning in the webui's console."""
    webui.logger.warning(f"spanish_ft: {message}")
    gr.Warning(message)


def status_markdown(extra: str = "") -> str:
    """What is active now, whether it fits the loaded model, and any extra note."""
    active, infos, config = webui.active_adapters(), webui.adapter_infos(), webui.loaded_model_config()
    model = webui.model_name()
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
    if not active and (gguf := loaded_gguf_info()) is not None:
        lines.append(f"- modelo GGUF exportado por spanish_ft desde `{', '.join(gguf.sources) or '?'}`: familia "
                     f"{gguf.family}, plantilla `{gguf.template}`, preset `{gguf.preset}`")
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def loaded_gguf_info() -> AdapterInfo | None:
    """The loaded model, when it is a GGUF file exported by spanish_ft (llama.cpp loader), else None."""
    name = webui.model_name()
    return gguf_model_info(webui.models_dir(), name) if name and name != "None" else None


def profile_key() -> tuple[str, ...]:
    """What the profile was applied for: the active adapters, or the exported GGUF model when none is active."""
    active = webui.active_adapters()
    info = None if active else loaded_gguf_info()
    return active or ((info.name,) if info else ())


def profile_source() -> AdapterInfo:
    """The single active adapter, or the loaded GGUF model exported by spanish_ft; ProfileError otherwise."""
    active = webui.active_adapters()
    if not active and (info := loaded_gguf_info()) is not None:
        return info
    if len(active) != 1:
        raise ProfileError("aplica exactamente un adaptador en Model → LoRA(s) para usar su perfil "
                           f"(activos ahora: {', '.join(active) or 'ninguno'}), o carga un modelo GGUF exportado "
                           "por spanish_ft")
    info = webui.adapter_infos().get(active[0])
    if info is None:
        raise ProfileError(f"«{active[0]}» no está en la carpeta de adaptadores {webui.lora_dir()}")
    return info


def profile_updates(panel: AdapterPanel) -> tuple[dict, str]:
    """({profile control: update}, summary) for the profile source; ProfileError when there is none."""
    profile = webui.resolve_active_profile(profile_source())
    text = webui.template_text(profile.template)
    summary = profile_summary(profile)
    webui.logger.info(f"spanish_ft: {summary}")
    return {panel.template: gr.update(value=profile.template), panel.template_text: text,
            panel.preset: gr.update(value=profile.preset), panel.mode: INSTRUCT_MODE}, summary


def apply_profile_click(panel: AdapterPanel) -> dict:
    """"Aplicar perfil": the profile controls and the status."""
    try:
        updates, summary = profile_updates(panel)
    except ValueError as err:
        warn(str(err))
        return {panel.status: status_markdown(f"⚠️ {err}")}
    return {**updates, panel.status: status_markdown(f"**Hecho.** {summary}")}


def guard_updates(panel: AdapterPanel, decision) -> dict:
    """The guard's markdown and its two buttons ("Cargar el adaptador fusionado", "Fusionar ahora")."""
    if not decision.triggered:
        return {panel.guard: gr.update(value="", visible=False), panel.load_fused: gr.update(visible=False),
                panel.fuse_now: gr.update(visible=False)}
    fused = gr.update(visible=True, interactive=decision.replacement is not None and not webui.multi_user(),
                      value=f"Cargar «{decision.replacement}»" if decision.replacement
                      else "Cargar el adaptador fusionado")
    fuse = gr.update(visible=True, interactive=decision.can_fuse, value=f"Fusionar ahora → «{decision.fusion_name}»")
    return {panel.guard: gr.update(value=f"### ⚠️ Varios adaptadores\n\n{decision.message}", visible=True),
            panel.load_fused: fused, panel.fuse_now: fuse}


def status_changed(panel: AdapterPanel, params: dict, last_seen) -> dict:
    """model_status changed (a LoRA or model load finished): auto-apply the profile once per new adapter set."""
    active, key = webui.active_adapters(), profile_key()
    if key == last_seen:  # a status message, not a new adapter set or GGUF model: keep the panel as it is
        return {panel.last_seen: last_seen}
    decision = decide_guard(active, webui.adapter_infos(), allow_writes=not webui.multi_user())
    if decision.triggered:
        warn(decision.message)
    updates, note = {}, ""
    if params.get("auto_profile", True) and should_auto_apply(key, last_seen):
        try:
            updates, summary = profile_updates(panel)
            note = f"**Hecho.** {summary}"
        except ValueError as err:
            warn(str(err))
            note = f"⚠️ {err}"
    return {**updates, panel.status: status_markdown(note), panel.last_seen: key, **guard_updates(panel, decision)}


def lora_selection_changed(panel: AdapterPanel, selected) -> dict:
    """The LoRA menu's selection changed (not yet applied): warn before a broken multi-adapter load."""
    infos = webui.adapter_infos()
    decision = decide_guard(selected, infos, allow_writes=not webui.multi_user())
    updates = guard_updates(panel, decision)
    if decision.triggered:
        warn(decision.message)
        updates[panel.model_status] = f"⚠️ spanish_ft: {decision.message} (pestaña spanish_ft → Adaptador)"
    elif decision.selected and decision.selected[0] in infos and (config := webui.loaded_model_config()):
        problems = check_base_model(infos[decision.selected[0]], config, webui.model_name())
        if problems:
            warn(" ".join(problems))
            updates[panel.model_status] = "⚠️ spanish_ft: " + " ".join(problems)
    return updates


def switched_to(panel: AdapterPanel, name: str, status: str, choices: list[str] | None = None) -> dict:
    """After loading `name` instead of the selection: the LoRA menu shows it, the guard hides."""
    webui.logger.info(status)
    menu = gr.update(value=[name]) if choices is None else gr.update(choices=choices, value=[name])
    return {panel.lora_menu: menu, panel.model_status: status, **guard_updates(panel, decide_guard((), {}))}


def load_replacement_click(panel: AdapterPanel, selected) -> dict:
    """"Cargar el adaptador fusionado": load the guard's replacement instead of the selection."""
    decision = decide_guard(selected or webui.active_adapters(), webui.adapter_infos())
    if webui.multi_user() or decision.replacement is None:
        warn("no hay un adaptador fusionado que cargar" if decision.replacement is None
             else "en modo multiusuario la extensión no cambia los adaptadores")
        return guard_updates(panel, decision)
    webui.set_active_adapters((decision.replacement,))
    return switched_to(panel, decision.replacement,
                       f"spanish_ft: cargado «{decision.replacement}» en lugar de {', '.join(decision.selected)}.")


def fuse_now_click(panel: AdapterPanel, selected) -> dict:
    """"Fusionar ahora": fuse the selection exactly and load the result instead."""
    decision = decide_guard(selected or webui.active_adapters(), webui.adapter_infos(),
                            allow_writes=not webui.multi_user())
    if not decision.can_fuse:
        warn(f"no se puede fusionar: {decision.fuse_blocker or 'elige al menos dos adaptadores'}")
        return guard_updates(panel, decision)
    try:
        result = fuse_selection(webui.lora_dir(), decision.selected)
    except (ValueError, OSError) as err:
        warn(f"la fusión falló: {err}")
        return guard_updates(panel, decision)
    name = result.out_dir.name
    webui.set_active_adapters((name,))
    status = (f"spanish_ft: fusionados {', '.join(decision.selected)} en «{name}» (exacto, r={result.rank}) "
              "y cargado en lugar de la selección.")
    return switched_to(panel, name, status, choices=webui.available_loras())


def export_click(gguf_type: str):
    """"Exportar a GGUF": run the export of the single active adapter, streaming its progress (a generator)."""
    active = webui.active_adapters()
    if webui.multi_user():
        yield "⚠️ En modo multiusuario la exportación está desactivada."
        return
    if len(active) != 1 or active[0] not in (infos := webui.adapter_infos()):
        yield ("⚠️ Aplica exactamente un adaptador de la carpeta de adaptadores en Model → LoRA(s) para exportarlo "
               f"(activos ahora: {', '.join(active) or 'ninguno'}).")
        return
    out = export_target(webui.models_dir(), active[0], gguf_type)
    if blocker := export_blocker(active[0], out, gguf_type):
        yield f"⚠️ {blocker}"
        return
    if out.exists():
        yield f"⚠️ Ya existe `{out}`: bórralo (y su `.json`) o elige otro tipo; la extensión no sobrescribe archivos."
        return
    info = infos[active[0]]
    template = webui.webui_paths().data / "instruction-templates" / f"{info.template}.yaml"
    base = webui.models_dir() / webui.model_name()  # the adapter is active, so its base is the loaded model
    argv, env = export_command(info.path, out, gguf_type, template if template.is_file() else None,
                               base if base.is_dir() else None)
    webui.logger.info(f"spanish_ft: exporting to GGUF: {' '.join(argv)}")
    for line, code in run_export(argv, env):
        if code is None:
            yield f"Exportando «{active[0]}» a `{out.name}`… `{line}`"
        elif code == 0:
            yield (f"**Hecho.** `{out}` está en la carpeta de modelos. En Model, pulsa 🔄, elige `{out.name}` con el "
                   "cargador llama.cpp: la extensión aplicará su plantilla y su preset al cargarlo.")
        else:
            warn(f"la exportación a GGUF falló: {line}")
            yield f"⚠️ La exportación falló (código {code}): {line}"
