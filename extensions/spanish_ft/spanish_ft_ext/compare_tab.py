"""The "Comparar" tab: one question, answered side by side by the base model and each adapter of its family.

Every variant (base model, then each bundle adapter of the loaded model's family) answers
with the same instruction template (the family's), the same preset and the same seed,
through the webui's own prompt builder and generate_reply; the user's adapters are
restored afterwards. The answers are shown as columns and exported as a Markdown file.
The orchestration is comparison.py's; this file holds the tab's widgets and its handler.
"""

from __future__ import annotations

import html
import tempfile
import time
from pathlib import Path

import gradio as gr

from training.families import FAMILIES, SEVEN_B_FAMILIES

from . import webui
from .adapters import model_family
from .comparison import comparison_markdown, comparison_variants, run_comparison
from .profile import INSTRUCT_MODE, Profile


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
    run = gr.Button("Comparar", variant="primary", interactive=not webui.multi_user())
    answers = gr.HTML(elem_id="sft-compare-answers")
    export = gr.File(label="Comparación en Markdown", interactive=False)
    state = webui.component("interface_state")
    run.click(webui.gather_state, webui.input_components(), state).then(
        compare_click, [question, state, preset, seed, max_new_tokens, greedy], [answers, export])


def comparison_html(results) -> str:
    """The answers as side-by-side cards (one column per variant)."""
    cards = []
    for result in results:
        body = (f"<p style='color:#c00'><b>Error:</b> {html.escape(result.error)}</p>" if result.error
                else f"<div style='white-space:pre-wrap'>{html.escape(result.answer) or '—'}</div>")
        cards.append(
            "<div style='flex:1 1 0;min-width:220px;border:1px solid #8884;border-radius:8px;padding:10px'>"
            f"<h4 style='margin-top:0'>{html.escape(result.variant.label)}</h4>{body}"
            f"<p style='opacity:.7;font-size:90%'>generación {result.seconds:.2f} s · "
            f"carga {result.load_seconds:.2f} s</p>"
            "</div>")
    return "<div style='display:flex;gap:10px;align-items:stretch'>" + "".join(cards) + "</div>"


def comparison_settings(family: str, preset: str, seed: int, max_new_tokens: int, greedy: bool) -> tuple[dict, dict]:
    """(webui settings for every variant, the same settings described for the export)."""
    template = Path(FAMILIES[family].template_file).stem
    preset = preset or FAMILIES[family].preset
    settings = webui.profile_settings(Profile("", template, preset))
    seed = int(seed or 0)  # an empty box: seed 0, still reproducible (the webui's -1 would be random)
    settings.update(seed=seed, max_new_tokens=int(max_new_tokens), auto_max_new_tokens=False, mode=INSTRUCT_MODE)
    if greedy:
        settings["do_sample"] = False
    described = {"modelo": webui.model_name(), "plantilla": template, "preset": preset, "semilla": seed,
                 "max_new_tokens": int(max_new_tokens),
                 "muestreo": "greedy" if greedy else "do_sample con semilla fija"}
    return settings, described


def compare_click(question, state, preset, seed, max_new_tokens, greedy):
    """"Comparar": (side-by-side HTML for `answers`, Markdown file for `export`); gr.Error when it cannot run."""
    blocker = webui.comparison_blocker()
    family = model_family(webui.loaded_model_config() or {})
    if not blocker and family is None:
        blocker = f"el modelo cargado no es de una familia de spanish_ft ({', '.join(SEVEN_B_FAMILIES)})"
    if blocker:
        webui.logger.warning(f"spanish_ft: {blocker}")
        raise gr.Error(blocker)
    variants = comparison_variants(family, webui.adapter_infos())
    original = webui.lora_names()
    try:
        settings, described = comparison_settings(family, (preset or "").strip(), seed, max_new_tokens, greedy)
        results = run_comparison(question, variants, webui.set_active_adapters,
                                 lambda text: webui.generate_answer(text, state, settings),
                                 lambda: webui.set_active_adapters(original))
    except ValueError as err:  # bad settings or empty question: nothing was switched yet
        webui.logger.warning(f"spanish_ft: {err}")
        raise gr.Error(str(err)) from err
    markdown = comparison_markdown(question, results, described)
    out = Path(tempfile.mkdtemp(prefix="spanish_ft-")) / f"comparacion-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(markdown, encoding="utf-8")
    return comparison_html(results), str(out)
