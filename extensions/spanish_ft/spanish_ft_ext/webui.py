"""The running webui as the extension sees it: its adapters, loaded model, controls and generation.

The only module of the extension that reads the webui's modules (`modules.shared`,
`modules.LoRA`, `modules.utils`, ...) and writes to its logger: the logic modules stay
testable without a webui, and the tabs ask this module for what they show. Only
`modules.shared` is imported up front; the other webui modules are imported inside the
functions that use them, so the UI can be built with nothing but `modules.shared` (and its
components) present, which the UI-construction test relies on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from pathlib import Path

from modules import shared

from .adapters import SHAPE_KEYS, AdapterInfo, scan_adapters
from .profile import (
    INSTRUCT_MODE,
    PRESET,
    TEMPLATE,
    Profile,
    ProfileError,
    WebuiPaths,
    install_hint,
    missing,
    resolve_profile,
)

# A child of the webui's own logger ('textgen'), so messages land in its console and log.
logger = logging.getLogger("textgen.spanish_ft")
NO_COMPARISON_LOADERS = ("LlamaServer", "Exllamav3Model", "TensorRTLLMModel")


def webui_module(name: str):
    """A webui module (modules.<name>), imported when first needed."""
    return importlib.import_module(f"modules.{name}")


def model_name() -> str:
    return shared.model_name


def multi_user() -> bool:
    """--multi-user: the extension then neither switches adapters nor writes files."""
    return bool(shared.args.multi_user)


def component(name: str):
    """One of the webui's own gradio components (shared.gradio), e.g. "lora_menu"."""
    return shared.gradio[name]


def input_components() -> list:
    """The webui's input components, in the order its interface state is gathered from."""
    return [shared.gradio[name] for name in shared.input_elements]


def lora_names() -> tuple[str, ...]:
    """The adapters the webui lists as applied (its own record, without the model check of active_adapters)."""
    return tuple(shared.lora_names)


def models_dir() -> Path:
    return Path(shared.args.model_dir)


def loaded_model_full_config() -> dict | None:
    """The loaded model's whole config as a dict, or None when no model is loaded."""
    config = getattr(shared.model, "config", None)
    return None if config is None else config.to_dict()


def update_settings(values: dict) -> None:
    """Change the webui's settings (the values its controls start with, and the API's defaults)."""
    shared.settings.update(values)


def webui_paths() -> WebuiPaths:
    webui = Path(shared.__file__).resolve().parents[1]
    return WebuiPaths(webui, Path(getattr(shared, "user_data_dir", webui)))


def lora_dir() -> Path:
    return Path(shared.args.lora_dir)


def adapter_infos() -> dict[str, AdapterInfo]:
    infos, problems = scan_adapters(lora_dir())
    for problem in problems:
        logger.warning(f"spanish_ft: {problem}")
    return infos


def loaded_adapters() -> tuple[str, ...]:
    """Adapters whose LoRA layers are in the model, in load order.

    Read from the layers, not from `peft_config`: PEFT leaves that dict on the base model
    after `unload()`, so it still lists adapters the webui removed.
    """
    if shared.model is None or not hasattr(shared.model, "peft_config"):
        return ()
    from peft.tuners.lora import LoraLayer

    for attempt in range(3):
        try:
            names: dict[str, None] = {}
            for module in shared.model.modules():
                if isinstance(module, LoraLayer):
                    names.update(dict.fromkeys([*module.lora_A.keys(), *module.lora_embedding_A.keys()]))
            return tuple(name for name in names if name != "__merged")
        except RuntimeError:  # the webui is injecting adapter layers right now (dict changed size); look again
            if attempt == 2:
                raise
            time.sleep(0.5)


def active_adapters() -> tuple[str, ...]:
    """Adapters the webui reports as applied, plus any still loaded in the model after a failed load."""
    return tuple(dict.fromkeys([*(shared.lora_names or ()), *loaded_adapters()]))


def loaded_model_config() -> dict | None:
    """model_type and the shape keys of the loaded model's config, or None when no model is loaded."""
    config = getattr(shared.model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        return None
    return {"model_type": config.model_type, **{key: getattr(config, key, None) for key in SHAPE_KEYS}}


def available_loras() -> list[str]:
    return webui_module("utils").get_available_loras()


def resolve_active_profile(info: AdapterInfo) -> Profile:
    utils = webui_module("utils")
    return resolve_profile(info, utils.get_available_instruction_templates(), utils.get_available_presets(),
                           webui_paths())


def missing_file(kind: tuple[str, str], name: str) -> ProfileError:
    paths = webui_paths()
    return ProfileError(f"{missing(kind, name, paths)}. {install_hint(paths)}")


def template_text(name: str) -> str:
    text = webui_module("models_settings").load_template_by_name(name)
    if not text:
        raise missing_file(TEMPLATE, name)
    return text


def profile_settings(profile: Profile) -> dict:
    """The webui settings a profile sets: sampler values of its preset, template text, mode."""
    if profile.preset not in webui_module("utils").get_available_presets():
        raise missing_file(PRESET, profile.preset)
    values = dict(webui_module("presets").load_preset(profile.preset))
    return {**values, "preset": profile.preset, "instruction_template_str": template_text(profile.template),
            "mode": INSTRUCT_MODE}


def set_active_adapters(names: tuple[str, ...]) -> None:
    """Make exactly `names` active through the webui's own add_lora_to_model, from a clean model.

    The webui only unloads when an adapter is removed from its list, so a model left with
    several adapters by a failed multi-adapter load would keep them; start over instead.
    """
    from modules.LoRA import add_lora_to_model
    from peft import PeftModel

    if active_adapters() == tuple(names) and lora_names() == tuple(names):
        return
    # the generation lock keeps a chat that is running from seeing its adapters swapped mid-reply
    with shared.generation_lock or contextlib.nullcontext():
        if isinstance(shared.model, PeftModel):
            shared.model = shared.model.unload()  # what the webui does when an adapter is removed
        shared.lora_names = []
        add_lora_to_model(list(names))


def comparison_blocker() -> str:
    """Why the comparison cannot run now ('' when it can), in Spanish."""
    if shared.args.multi_user:
        return "en modo multiusuario la comparación está desactivada: cambia los adaptadores del modelo para todos"
    if shared.model is None or shared.model_name == "None":
        return "no hay ningún modelo cargado: carga el modelo base en la pestaña Model"
    if type(shared.model).__name__ in NO_COMPARISON_LOADERS:
        return f"el cargador {shared.args.loader} no admite adaptadores LoRA: usa el cargador Transformers"
    return ""


def generate_answer(question: str, state: dict, settings: dict) -> str:
    """The webui's reply to `question` in instruct mode with `settings` (preset values, template, seed...)."""
    chat = webui_module("chat")
    generate_reply = webui_module("text_generation").generate_reply
    state = {**state, **settings, "add_bos_token": False}  # instruct mode: the template handles BOS
    history = {"internal": [], "visible": [], "metadata": {}}
    prompt = chat.generate_chat_prompt(question, state, history=history)
    replies = generate_reply(prompt, state, stopping_strings=chat.get_stopping_strings(state), is_chat=True)
    *_, reply = replies  # it streams partial replies; the last one is the whole answer
    return reply.strip()


def gather_state(*values) -> dict:
    """The webui's interface state from its input components (modules.ui.gather_interface_values)."""
    return webui_module("ui").gather_interface_values(*values)
