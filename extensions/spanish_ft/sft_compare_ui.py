"""The "Comparar" tab's handler: run the comparison in the webui and show it side by side.

Every variant (base model, then each bundle adapter of the loaded model's family) answers
with the same instruction template (the family's), the same preset and the same seed,
through the webui's own prompt builder and generate_reply; the user's adapters are
restored afterwards. The answers are shown as columns and exported as a Markdown file.
"""

from __future__ import annotations

import html
import tempfile
import time
from pathlib import Path

import gradio as gr
import sft_webui as webui
from sft_adapters import model_family
from sft_compare import comparison_markdown, comparison_variants, run_comparison
from sft_profile import INSTRUCT_MODE, Profile

from training.families import FAMILIES


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
    described = {"modelo": webui.shared.model_name, "plantilla": template, "preset": preset, "semilla": seed,
                 "max_new_tokens": int(max_new_tokens),
                 "muestreo": "greedy" if greedy else "do_sample con semilla fija"}
    return settings, described


def compare_click(question, state, preset, seed, max_new_tokens, greedy):
    """"Comparar": outputs (side-by-side HTML, Markdown export file)."""
    blocker = webui.comparison_blocker()
    family = model_family(webui.loaded_model_config() or {})
    if not blocker and family is None:
        blocker = "el modelo cargado no es de una familia de spanish_ft (mistral, llama2, falcon)"
    if blocker:
        webui.logger.warning(f"spanish_ft: {blocker}")
        raise gr.Error(blocker)
    variants = comparison_variants(family, webui.adapter_infos())
    original = tuple(webui.shared.lora_names)
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
