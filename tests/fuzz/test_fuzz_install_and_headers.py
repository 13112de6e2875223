"""Fuzz the installer's record, safetensors headers and adapter_config.json through the adapter door.

- install.py's record (extensions/spanish_ft/.spanish_ft-install.json) as random bytes, random JSON
  and record-shaped JSON with random paths: `load_manifest` accepts it or raises InstallError naming
  the record; then install --dry-run and --uninstall end with an exit code, never an exception.
- adapter_model.safetensors as random bytes, a random length before random JSON, and tensor tables
  with random dtypes, shapes, offsets and data lengths: `check_safetensors` accepts it or raises
  CorruptFileError naming the file; a file it accepts, safetensors itself opens and reads.
- adapter_config.json as random JSON and LoRA-shaped JSON with random values, through `open_adapter`:
  accepted or AdapterError naming the file and its folder; an accepted config becomes PEFT's
  LoraConfig or a ValueError naming the file.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

import install
from training.adapters.adapter_config import FIELDS, peft_config
from training.adapters.folder import CONFIG_NAME, SAFE_WEIGHTS_NAME, AdapterError, open_adapter
from training.adapters.safetensors_header import DTYPE_BITS, CorruptFileError, check_safetensors

LONE = st.sampled_from(["\ud800", "\udfff"])
TEXT = st.one_of(st.text(max_size=12), st.builds(lambda a, s: a + s, st.text(max_size=4), LONE))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
JSON = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(TEXT, inner, max_size=4)), max_leaves=16)


def dumps(value) -> bytes:
    return json.dumps(value).encode()  # lone surrogates as \u escapes: valid JSON, not valid Unicode


# --- the installer's record ----------------------------------------------------------------------------

PLACES = ["extensions/spanish_ft/", "extensions/", "user_data/loras/", "user_data/loras/a/", "user_data/presets/",
          "instruction-templates/", "loras/x/", "../", "/", "", "user_data/", "modules/"]
REL = st.builds(lambda place, name: place + name, st.sampled_from(PLACES), TEXT)
SHA = st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), LEAVES)
RECORDS = st.fixed_dictionaries(
    {"files": st.dictionaries(REL, SHA, max_size=4), "created_dirs": st.lists(REL, max_size=4)},
    optional={"pending": st.one_of(st.dictionaries(REL, SHA, max_size=3), JSON), "tool": JSON})


def webui_with_record(root: Path, record: bytes) -> Path:
    (root / "modules").mkdir(parents=True)
    (root / "server.py").write_text("# webui\n")
    for folder in ("user_data/loras/a", "user_data/presets", "extensions/spanish_ft"):
        (root / folder).mkdir(parents=True)
    (root / "user_data/presets/mio.yaml").write_text("top_p: 0.5\n")
    (root / install.MANIFEST).write_bytes(record)
    return root


def check_record(record: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        webui = webui_with_record(Path(tmp) / "webui", record)
        try:
            install.load_manifest(webui)
        except install.InstallError as error:
            assert str(webui / install.MANIFEST) in str(error), str(error)
        for flags in (["--dry-run"], ["--uninstall"]):
            err = io.StringIO()
            with redirect_stdout(io.StringIO()), redirect_stderr(err):
                code = install.main(["--webui", str(webui), *flags])
            assert code in (install.EXIT_OK, install.EXIT_KEPT, install.EXIT_USAGE), err.getvalue()
            assert code != install.EXIT_USAGE or "error: " in err.getvalue()


@given(st.binary(max_size=300))
def test_a_record_of_random_bytes(record):
    check_record(record)


@given(JSON)
def test_a_record_of_random_json(value):
    check_record(dumps(value))


@given(RECORDS)
def test_a_record_shaped_record_with_random_entries(value):
    check_record(dumps(value))


# --- safetensors headers -------------------------------------------------------------------------------

def safetensors_bytes(header: bytes, data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + data


NUMBER = st.one_of(st.integers(min_value=0, max_value=6), st.integers(), st.booleans(), st.floats(), st.none())


@st.composite
def tensor_tables(draw) -> bytes:
    """A header of tensors laid end to end, each with a random dtype and shape; offsets and data length
    mostly right, sometimes off."""
    header, position = {}, 0
    for name in draw(st.lists(TEXT, max_size=4, unique=True)):
        dtype = draw(st.one_of(st.sampled_from(sorted(DTYPE_BITS)), TEXT))
        shape = draw(st.lists(st.integers(min_value=0, max_value=5), max_size=3))
        size = max(DTYPE_BITS.get(dtype, 8), 8) // 8 * math.prod(shape)
        begin, end = position, position + size
        if draw(st.booleans()):
            begin, end = draw(NUMBER), draw(NUMBER)
            shape = draw(st.one_of(st.just(shape), JSON))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        position = position + size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.dictionaries(TEXT, TEXT, max_size=2), JSON))
    data = bytes(draw(st.one_of(st.just(position), st.integers(min_value=0, max_value=position + 8))))
    return safetensors_bytes(dumps(header), data)


def check_weights(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adaptador" / SAFE_WEIGHTS_NAME
        path.parent.mkdir()
        path.write_bytes(content)
        try:
            tensors = check_safetensors(path)
        except CorruptFileError as error:
            assert f"{SAFE_WEIGHTS_NAME} in {path.parent}" in str(error), str(error)
            return
        with safe_open(str(path), framework="numpy") as opened:  # accepted: safetensors agrees
            assert set(opened.keys()) == set(tensors)
            for name, (dtype, shape) in tensors.items():
                tensor = opened.get_slice(name)
                assert (tensor.get_dtype(), tensor.get_shape()) == (dtype, shape)


@given(st.binary(max_size=200))
def test_weights_of_random_bytes(content):
    check_weights(content)


@given(st.one_of(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=2**64 - 1)),
       st.one_of(JSON.map(dumps), st.binary(max_size=100)), st.binary(max_size=100))
def test_weights_with_a_random_header_length(length, header, data):
    check_weights(safetensors_bytes(header, data, length))


@given(tensor_tables())
def test_weights_with_random_tensor_tables(content):
    check_weights(content)


# --- adapter_config.json through the door --------------------------------------------------------------

GOOD_WEIGHTS = safetensors_bytes(dumps({"base_model.model.q_proj.lora_A.weight": {
    "dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}}), bytes(8))
LORA_VALUES = st.one_of(JSON, st.sampled_from(["LORA", "CAUSAL_LM", "none", "all", "q_proj", ".*", "(", "gaussian"]),
                        st.lists(st.sampled_from(["q_proj", "v_proj", "[", ".*"]), max_size=3))
LORA_CONFIGS = st.builds(lambda fields: {"peft_type": "LORA", **fields},
                         st.dictionaries(st.sampled_from(sorted(FIELDS)), LORA_VALUES, max_size=6))


def check_config(config: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adaptador"
        folder.mkdir()
        (folder / CONFIG_NAME).write_bytes(config)
        (folder / SAFE_WEIGHTS_NAME).write_bytes(GOOD_WEIGHTS)
        try:
            adapter = open_adapter(folder)
        except AdapterError as error:
            assert f"{CONFIG_NAME} in {folder}" in str(error), str(error)
            return
        where = f"{CONFIG_NAME} in {folder}"
        try:
            peft_config(adapter.config, where)
        except ValueError as error:
            assert where in str(error), str(error)


@given(st.one_of(st.binary(max_size=100), JSON.map(dumps)))
def test_a_config_of_random_json(config):
    check_config(config)


@given(LORA_CONFIGS)
def test_a_lora_shaped_config_with_random_values(config):
    check_config(dumps(config))
