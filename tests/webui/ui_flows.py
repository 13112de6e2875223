"""The extension's user paths in a real webui, driven in headless Chromium (test helper, not shipped).

Each flow acts like a user, asserts what the user should see, and optionally saves a
screenshot. Used by the integration test (assertions only) and take_screenshots.py. The
flows take the scratch webui's line-up (lineups.py: model, adapters, template, preset), so
they run on the tiny stand-ins and on the Gemma demo alike.
Needs Playwright's Python package and a Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
QUESTION = "¿Cuál es la capital de Ecuador?"
LEGAL_QUESTION = "¿Qué dice el artículo 71 de la Constitución?"


@contextlib.contextmanager
def browser_page(url: str, width: int = 1600, height: int = 900):
    """A page on the webui, loaded (the window is wide enough for the Mode radio to show)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, headless=True, viewport={"width": width, "height": height})
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="spanish_ft").wait_for(timeout=120_000)
            yield page
        finally:
            context.close()


def api_lora_names(api: str) -> list[str]:
    with urllib.request.urlopen(api + "/v1/internal/model/info", timeout=30) as response:
        return json.loads(response.read())["lora_names"]


def open_tab(page, *names: str) -> None:
    for name in names:
        page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(400)


def open_lora_menu(page) -> None:
    open_tab(page, "Model")
    if not page.get_by_role("button", name="Apply LoRAs").is_visible():
        page.get_by_text("See more options").click()


def select_loras(page, names: list[str]) -> None:
    """Replace the LoRA menu's selection with `names` (not applied yet)."""
    open_lora_menu(page)
    menu = page.get_by_label("LoRA(s)")
    for _ in range(8):  # remove the current chips (gradio 4 draws a remove button in each)
        chips = page.locator(".token .token-remove")
        if chips.count() == 0:
            break
        chips.first.click()
        page.wait_for_timeout(300)
    for name in names:
        menu.click()
        page.get_by_role("option", name=name, exact=True).click()
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")


def wait_text(page, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until `text` is on the page, even in a tab that is not shown."""
    page.get_by_text(text).first.wait_for(state="attached", timeout=timeout_ms)


def preset_value(page) -> str:
    open_tab(page, "Parameters", "Generation")
    return page.get_by_role("listbox", name="Preset", exact=True).input_value()


def flow_profile(page, lineup, shot: Path | None = None, adapter: str = "") -> None:
    """Applying a bundle adapter (default: the fused one) in the LoRA menu applies its template, preset and mode."""
    adapter = adapter or lineup.fused
    open_tab(page, "Chat")
    page.locator('#chat-mode [data-testid="chat-radio-label"]').click()  # start away from instruct
    select_loras(page, [adapter])
    page.get_by_role("button", name="Apply LoRAs").click()
    wait_text(page, f"Perfil de «{adapter}» aplicado")
    assert preset_value(page) == lineup.preset
    assert page.get_by_label("number input for temperature").input_value() == lineup.preset_value("temperature")
    if shot:  # what the extension says it applied, and the Parameters tab that shows it
        page.screenshot(path=str(shot.with_name(shot.stem + "-parameters.png")))
        open_tab(page, "spanish_ft", "Adaptador")
        page.screenshot(path=str(shot))
    open_tab(page, "Parameters", "Instruction template")
    assert page.locator("#instruction-template-str textarea").input_value() == lineup.template_text()
    assert page.locator('#chat-mode input[value="instruct"]').is_checked()


def flow_profile_kept(page) -> None:
    """The user's later change is kept: the same adapter applied again does not re-apply the profile."""
    open_tab(page, "Parameters", "Generation")
    page.get_by_role("listbox", name="Preset", exact=True).click()
    page.get_by_role("option", name="Top-P", exact=True).click()
    page.wait_for_timeout(800)
    open_lora_menu(page)
    page.get_by_role("button", name="Apply LoRAs").click()
    wait_text(page, "Successfully applied the LoRAs")
    page.wait_for_timeout(1500)
    assert preset_value(page) == "Top-P"


def set_length_and_seed(page, max_new_tokens: int, seed: int) -> None:
    """Parameters -> Generation: a fixed reply budget (auto_max_new_tokens off: it grows the budget to the
    whole context, so a reply that never ends runs for minutes) and a fixed seed (the same reply each time)."""
    open_tab(page, "Parameters", "Generation")
    parameters = page.locator("#parameters")  # the extension's tab has a max_new_tokens of its own
    parameters.get_by_label("auto_max_new_tokens").uncheck()
    for label, value in (("number input for max_new_tokens", max_new_tokens), ("Seed (-1 for random)", seed)):
        parameters.get_by_label(label, exact=True).fill(str(value))
        page.keyboard.press("Tab")
    page.wait_for_timeout(500)


def flow_chat(page, question: str = QUESTION, shot: Path | None = None, max_new_tokens: int = 200,
              seed: int = 1) -> str:
    """An instruct chat with the settings the profile applied: the question sent, the reply awaited; returns it."""
    set_length_and_seed(page, max_new_tokens, seed)
    open_tab(page, "Chat")
    assert page.locator('#chat-mode input[value="instruct"]').is_checked()
    page.locator("#new-chat-btn").click()  # not a continuation of a chat the webui saved earlier
    page.wait_for_timeout(1000)
    page.locator("#chat-input textarea").fill(question)
    page.locator("#Generate").click()
    reply = page.locator("#chat .assistant-message .message-body").last
    reply.wait_for(timeout=120_000)
    # the webui marks the chat's container `_generating` from the click until the reply is complete
    page.wait_for_function("() => !document.querySelector('._generating')", timeout=900_000)
    page.wait_for_timeout(500)
    if shot:
        page.screenshot(path=str(shot))
    return reply.inner_text()


def flow_fuentes(page, question: str = LEGAL_QUESTION, shot: Path | None = None, max_new_tokens: int = 200) -> str:
    """A legal question in an instruct chat with the law adapter: the answer, then the articles given to the
    model listed under it (Fuentes), the cited one first, its text expandable; returns the answer's text."""
    text = flow_chat(page, question, max_new_tokens=max_new_tokens)
    reply = page.locator("#chat .assistant-message .message-body").last
    fuentes = reply.locator(".spanish-ft-fuentes")
    fuentes.wait_for(timeout=30_000)
    first = fuentes.locator("li").first
    assert "Constitución de la República del Ecuador, artículo 71" in first.inner_text(), fuentes.inner_text()
    first.locator("summary").click()  # the user opens the article's text
    page.wait_for_timeout(300)
    assert "naturaleza" in first.inner_text().lower()
    user = page.locator("#chat .user-message .message-body").last.inner_text()
    assert user.strip() == question  # the chat shows the question as typed, not the prompt with the articles
    if shot:
        page.screenshot(path=str(shot))
    return text


def flow_guard(page, api: str, lineup, shot: Path | None = None) -> None:
    """Two adapters selected: warning and offer; the fused adapter, then an exact fusion, replace them."""
    first, second = lineup.singles
    select_loras(page, [first, second])
    wait_text(page, "Has elegido 2 adaptadores a la vez")
    open_tab(page, "spanish_ft", "Adaptador")
    assert page.get_by_role("heading", name=re.compile("Varios adaptadores")).is_visible()
    if shot:
        page.screenshot(path=str(shot))
    page.get_by_role("button", name=f"Cargar «{lineup.fused}»").click()
    wait_text(page, f"cargado «{lineup.fused}» en lugar de")
    assert api_lora_names(api) == [lineup.fused]
    select_loras(page, [first, second])
    open_tab(page, "spanish_ft", "Adaptador")
    page.get_by_role("button", name=re.compile("^Fusionar ahora")).click()
    wait_text(page, f"fusionados {first}, {second} en", timeout_ms=300_000)
    assert api_lora_names(api) == [f"fusion-{first}+{second}"]


def flow_compare(page, api: str, shot: Path | None = None) -> str:
    """The comparison shows base and each family adapter side by side, restores the adapters; returns the export."""
    before = api_lora_names(api)
    open_tab(page, "spanish_ft", "Comparar")
    page.get_by_label("Pregunta").fill(QUESTION)
    page.locator("#sft-compare-tokens input[type=number]").fill("40")
    page.get_by_role("button", name="Comparar", exact=True).click()
    page.locator("#sft-compare-answers h4").first.wait_for(timeout=900_000)
    cards = page.locator("#sft-compare-answers").get_by_text(re.compile(r"^generación \d+\.\d\d s"))
    assert cards.count() >= 4, cards.count()  # base + instrucciones, leyes-ec, fusionado
    assert api_lora_names(api) == before
    link = page.locator("a[download]").first
    link.wait_for()
    if shot:
        page.screenshot(path=str(shot))
    with urllib.request.urlopen(link.get_attribute("href") if link.get_attribute("href").startswith("http")
                                else page.url.rstrip("/") + "/" + link.get_attribute("href").lstrip("/")) as response:
        return response.read().decode("utf-8")


def flow_memory(page, shot: Path | None = None, source: str = "") -> str:
    """The memory table for the loaded model (or `source`); returns its text for comparison with the CLI."""
    open_tab(page, "spanish_ft", "Memoria")
    page.get_by_label("Modelo: vacío = el cargado; si no, id del hub o ruta a config.json").fill(source)
    page.get_by_role("button", name="Calcular").click()
    table = page.locator("#sft-memory table").first
    table.wait_for()
    if shot:
        page.screenshot(path=str(shot))
    return table.inner_text()
