"""Writing the GGUF file of a merged model: metadata first, then one tensor at a time.

The gguf package's writer is given every tensor's name, shape and type up front (layout.py),
writes the header, the metadata and the tensor table, and then receives each tensor as it is
converted and quantised, so a 7B model is never in memory twice. Metadata: llama.cpp's
hyperparameters (layout.py), the tokenizer with the bundle's template as chat template
(vocab.py), the `spanish_ft.*` keys by which the extension recognises the model, and the licence
that must travel with a model of the family (record.py: licence_of).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from training.adapters.gguf import layout, vocab
from training.adapters.gguf.checks import ExportSettings, Inputs
from training.adapters.gguf.file_record import METADATA_KEYS, NOTICE_KEY, licence_of
from training.families import FAMILIES


def write_gguf(path: Path, model, inputs: Inputs, settings: ExportSettings) -> None:
    """The GGUF file at `path`: metadata, then one tensor at a time (never two copies of the model in RAM)."""
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[inputs.arch])
    writer.add_name(inputs.adapter_name)
    writer.add_file_type(layout.FILE_TYPES[settings.written_type][0])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    layout.add_hyperparameters(writer, model.config, inputs.arch)
    vocab.add_tokenizer(writer, inputs.tokenizer, model.config.vocab_size, inputs.chat_template)
    for key, value in spanish_ft_metadata(inputs).items():
        writer.add_string(key, value)
    add_licence(writer, inputs.family)
    tensors = [(name, shape, make, layout.tensor_type(shape, settings.written_type))
               for name, shape, make in layout.gguf_tensors(model, inputs.arch)]
    for name, shape, _, kind in tensors:
        writer.add_tensor_info(name, shape, np.float32, layout.tensor_bytes(shape, kind), raw_dtype=kind)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(layout.tensor_bytes(shape, kind) for _, shape, _, kind in tensors)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {settings.out.name}") as bar:
            for _, _, make, kind in tensors:
                data = gguf.quants.quantize(make(), kind)
                writer.write_tensor_data(data)
                bar.update(data.nbytes)
    finally:
        writer.close()


def spanish_ft_metadata(inputs: Inputs) -> dict[str, str]:
    """What the extension needs to recognise the model and apply its profile (METADATA_KEYS)."""
    family = FAMILIES[inputs.family]
    values = {"adapter": inputs.adapter_name, "family": inputs.family,
              "template": inputs.record.template_name or Path(family.template_file).stem,
              "preset": inputs.record.preset or family.preset, "adapter_sha256": inputs.adapter_sha256}
    return {METADATA_KEYS[key]: value for key, value in values.items()}


def add_licence(writer: gguf.GGUFWriter, family: str) -> None:
    licence = licence_of(family)
    if licence is not None:
        writer.add_license(licence["name"])
        writer.add_license_link(licence["link"])
        writer.add_string(NOTICE_KEY, licence["notice"])
