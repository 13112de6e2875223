"""The extension's tab (Adaptador, Comparar, Memoria) and its listeners on the webui's own controls.

Built inside the webui's gr.Blocks by script.ui(). Listeners on webui components:
- `lora_menu.change`: the multi-adapter guard warns before a broken load is applied;
- `model_status.change`: fires when the webui's Apply button writes its progress and result
  there; the profile is applied once per new adapter set. A second `lora_menu_apply.click`
  listener would be a separate event, not chained after the webui's (gradio has no public
  way to chain after another module's listener), so it could run before the adapter is loaded.
The profile writes into the webui's own controls (instruction template, its text, preset,
mode), so the Parameters tab shows what generation uses.
"""

from __future__ import annotations

import functools

import gradio as gr
import sft_compare_ui
import sft_handlers as handlers
import sft_memory_ui
import sft_webui as webui

PROFILE_OUTPUTS = ("instruction_template", "instruction_template_str", "preset_menu", "mode")


def webui_components(*names: str) -> list:
    return [webui.shared.gradio[name] for name in names]


def build_adapter_tab(params: dict) -> None:
    mu = webui.shared.args.multi_user
    gr.Markdown("Reconoce el adaptador de spanish_ft activo, aplica su plantilla, su preset y el modo *instruct*, "
                "y avisa antes de cargar varios adaptadores a la vez (la webui no sabe combinarlos).")
    status = gr.Markdown("Pulsa «Actualizar» para ver el estado.", elem_id="sft-status")
    with gr.Row():
        apply_profile = gr.Button("Aplicar perfil", variant="primary")
        refresh = gr.Button("Actualizar")
    guard_md = gr.Markdown(visible=False, elem_id="sft-guard")
    with gr.Row():
        load_fused = gr.Button("Cargar el adaptador fusionado", visible=False, interactive=not mu)
        fuse_now = gr.Button("Fusionar ahora", visible=False, interactive=not mu)
    if mu:
        gr.Markdown("Modo multiusuario: cargar y fusionar adaptadores está desactivado (cambiaría el modelo de "
                    "todos y escribiría archivos en el servidor).")
    last_seen = gr.State(None)  # the adapter set the profile was last auto-applied for (per browser session)
    guard = [guard_md, load_fused, fuse_now]
    lora_menu, model_status = webui_components("lora_menu", "model_status")

    apply_profile.click(handlers.apply_profile_click, None, webui_components(*PROFILE_OUTPUTS) + [status],
                        show_progress=False)
    refresh.click(handlers.status_markdown, None, status, show_progress=False)
    model_status.change(functools.partial(handlers.status_changed, params), last_seen,
                        webui_components(*PROFILE_OUTPUTS) + [status, last_seen, *guard], show_progress=False)
    lora_menu.change(handlers.lora_selection_changed, lora_menu, [*guard, model_status], show_progress=False)
    load_fused.click(handlers.load_replacement_click, lora_menu, [lora_menu, model_status, *guard])
    fuse_now.click(handlers.fuse_now_click, lora_menu, [lora_menu, model_status, *guard])
    # At page load: show the state and remember the active set, so a reload does not re-apply the profile
    webui.shared.gradio["interface"].load(lambda: (handlers.status_markdown(), webui.active_adapters()), None,
                                          [status, last_seen], show_progress=False)


def build_compare_tab(params: dict) -> None:
    gr.Markdown("Una pregunta, respondida por el modelo base (sin adaptadores) y por cada adaptador de spanish_ft "
                "de su familia, con la misma plantilla, el mismo preset y la misma semilla. Al terminar se "
                "restauran tus adaptadores.")
    question = gr.Textbox(label="Pregunta", lines=3,
                          placeholder="¿Qué derechos reconoce a la naturaleza la Constitución del Ecuador?")
    with gr.Row():
        preset = gr.Textbox(label="Preset (vacío: el de la familia)", value="")
        seed = gr.Number(label="Semilla", value=params["compare_seed"], precision=0)
        max_new_tokens = gr.Slider(1, 1024, value=params["compare_max_new_tokens"], step=1, label="max_new_tokens",
                                   elem_id="sft-compare-tokens")
        greedy = gr.Checkbox(label="Greedy (sin muestreo)", value=params["compare_greedy"])
    run = gr.Button("Comparar", variant="primary", interactive=not webui.shared.args.multi_user)
    answers = gr.HTML(elem_id="sft-compare-answers")
    export = gr.File(label="Comparación en Markdown", interactive=False)
    state = webui.shared.gradio["interface_state"]
    run.click(webui.gather_state, [webui.shared.gradio[k] for k in webui.shared.input_elements], state).then(
        sft_compare_ui.compare_click, [question, state, preset, seed, max_new_tokens, greedy], [answers, export])


def build_memory_tab(params: dict) -> None:
    gr.Markdown("Memoria necesaria para inferencia (16, 8 y 4 bits) y entrenamiento (completo, LoRA, QLoRA), con "
                "el desglose. Son los mismos números que `python -m training memory`.")
    with gr.Row():
        source = gr.Textbox(label="Modelo: vacío = el cargado; si no, id del hub o ruta a config.json", value="")
        seq_len = gr.Number(label="Longitud de secuencia (tokens)", value=params["memory_seq_len"], precision=0)
        batch = gr.Number(label="Lote (batch)", value=params["memory_batch"], precision=0)
        rank = gr.Number(label="Rango LoRA (r)", value=params["memory_rank"], precision=0)
        checkpointing = gr.Checkbox(label="Gradient checkpointing", value=True)
    run = gr.Button("Calcular", variant="primary")
    table = gr.Markdown(elem_id="sft-memory")
    run.click(sft_memory_ui.memory_click, [source, seq_len, batch, rank, checkpointing], table)


def build_ui(params: dict) -> None:
    """The extension's controls; script.ui() calls this inside the webui's tab for the extension."""
    with gr.Tab("Adaptador"):
        build_adapter_tab(params)
    with gr.Tab("Comparar"):
        build_compare_tab(params)
    with gr.Tab("Memoria"):
        build_memory_tab(params)
