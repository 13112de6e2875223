"""Adapters from strangers: every command that reads an adapter folder (fuse, merge, evaluate, a
recipe's lora.stack_on, the extension's "Fusionar ahora") opens it through one strict door
(training/adapters/folder.py). A config field that makes PEFT import a package is refused before
PEFT sees the folder (a marker package proves nothing was imported), unknown fields and wrong types
are named, a truncated or forged safetensors file is named instead of a SafetensorError traceback,
pickle is refused unless allowed (and then read without running code), and the extension resolves
adapter names strictly inside its LoRA folder. Each refusal: exit 1 (or ValueError), the file and
field named, no traceback, every file around byte-for-byte unchanged, no output left behind."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from harness import (
    FAST,
    ROOT,
    assert_refused,
    cli_env,
    fingerprint,
    make_adapter,
    refused,
    run_cli,
    write_recipe,
    write_rows,
)
from safetensors.torch import load_file

sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
from spanish_ft_ext.adapters import scan_adapters  # noqa: E402
from spanish_ft_ext.guard import fuse_selection, fusion_name  # noqa: E402

from training.__main__ import main  # noqa: E402

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MARKER_PACKAGES = ("megatron", "spanish_ft_marker")  # each writes IMPORTED when imported


@pytest.fixture(scope="module")
def kit(tiny_model_dirs, tmp_path_factory) -> dict:
    """The tiny llama2 base, a good adapter and held-out rows, outside each test's tmp_path."""
    root = tmp_path_factory.mktemp("kit")
    base = tiny_model_dirs["llama2"]
    return {"base": base, "a": make_adapter(base, root / "a", seed=1), "test": write_rows(root / "held" / "test.jsonl"),
            "train": write_rows(root / "train.jsonl", 8)}


@pytest.fixture(autouse=True)
def marker_packages(tmp_path_factory, monkeypatch):
    """Importable packages `megatron` (with `megatron.core`, which PEFT 0.21 allows) and `spanish_ft_marker`
    that write a marker file when imported: the proof that no field made anything import them."""
    where = tmp_path_factory.mktemp("site")
    marker = where / "IMPORTED"
    for name in MARKER_PACKAGES:
        (where / name / "core").mkdir(parents=True)
        (where / name / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write({name!r})\n")
        (where / name / "core" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(where))
    yield {"marker": marker, "path": where}
    imported = marker.read_text() if marker.exists() else None
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in MARKER_PACKAGES)
    for name in loaded:  # so that one failure does not spill into the next test
        del sys.modules[name]
    assert imported is None and not loaded, f"imported: {imported or loaded}"


def set_config(**changes):
    def mutate(folder):
        config = json.loads((folder / CONFIG).read_text())
        (folder / CONFIG).write_text(json.dumps({**config, **changes}))
    return mutate


def write_config(text: str):
    return lambda folder: (folder / CONFIG).write_text(text)


def cut_weights(keep_bytes):
    def mutate(folder):
        data = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(data[:keep_bytes(len(data))])
    return mutate


def rewrite_header(change):
    """Rewrite the safetensors header through `change(header dict or bytes) -> bytes`, the data kept."""
    def mutate(folder):
        data = (folder / WEIGHTS).read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = change(json.loads(data[8:8 + length]))
        (folder / WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header + data[8 + length:])
    return mutate


def offsets_past_end(header: dict) -> bytes:
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + 4096, end + 4096]
    return json.dumps(header).encode()


def header_length(value: int):
    def mutate(folder):
        data = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(value.to_bytes(8, "little") + data[8:])
    return mutate


def pickle_only(folder):
    (folder / WEIGHTS).unlink()
    (folder / "adapter_model.bin").write_bytes(b"never unpickled")


def emptied(folder):
    for path in folder.iterdir():
        path.unlink()


# case -> (change to a good adapter, the file named, what the message says)
CASES = {
    "megatron_config": (set_config(megatron_config={"tensor_model_parallel_size": 1}, megatron_core="megatron.core"),
                        CONFIG, ["megatron_config is set", "'megatron.core'", "not supported"]),
    "megatron_core": (set_config(megatron_core="spanish_ft_marker"), CONFIG, ["megatron_core='spanish_ft_marker'"]),
    "auto_mapping": (set_config(auto_mapping={"base_model_class": "X", "parent_library": "spanish_ft_marker"}),
                     CONFIG, ["auto_mapping names the library 'spanish_ft_marker'"]),
    "unknown field": (set_config(lora_magic=1), CONFIG, ["unknown field 'lora_magic'"]),
    "wrong types": (set_config(r="16", lora_alpha=True, target_modules=5), CONFIG,
                    ["r is '16'; expected a whole number", "lora_alpha is True", "target_modules is 5"]),
    "bad regex": (set_config(target_modules="q_proj("), CONFIG, ["target_modules is 'q_proj('"]),
    "not LoRA": (set_config(peft_type="IA3"), CONFIG, ["peft_type is 'IA3'; only LORA"]),
    "task type": (set_config(task_type="SEQ_CLS"), CONFIG, ["task_type is 'SEQ_CLS'"]),
    "config is a list": (write_config("[1, 2]"), CONFIG, ["not a JSON list"]),
    "config not JSON": (write_config('{"r": 8,'), CONFIG, ["not valid JSON"]),
    "truncated weights": (cut_weights(lambda size: size - 100), WEIGHTS, ["truncated (tensor"]),
    "empty weights": (cut_weights(lambda size: 0), WEIGHTS, ["truncated (0 bytes"]),
    "header length past the end": (header_length(10**12), WEIGHTS, ["header length, 1000000000000 bytes"]),
    "garbage header": (rewrite_header(lambda header: b"{garbage" + b" " * 40), WEIGHTS, ["header is not valid JSON"]),
    "header a list": (rewrite_header(lambda header: b"[]"), WEIGHTS, ["header is a JSON list"]),
    "offsets past the end": (rewrite_header(offsets_past_end), WEIGHTS, ["past the end of the file's"]),
    "pickle": (pickle_only, "adapter_model.bin", ["pickle weights", "--allow-pickle"]),
    "empty folder": (emptied, None, ["not a LoRA adapter folder (no adapter_config.json)"]),
}


def stranger(kit: dict, tmp_path, case: str):
    """A copy of the good adapter with `case`'s change, and the path its refusal must name."""
    folder = tmp_path / "ajeno"
    shutil.copytree(kit["a"], folder)
    change, file, _ = CASES[case]
    change(folder)
    if file is None:
        return folder, str(folder)
    return folder, str(folder / file) if file.endswith(".bin") else f"{file} in {folder}"


def command_line(command: str, adapter, kit: dict, out) -> list:
    if command == "fuse":
        return ["fuse", kit["a"], adapter, "--out", out]
    if command == "merge":
        return ["merge", adapter, "--out", out, "--dtype", "float32"]
    return ["evaluate", "--base", kit["base"], "--adapters", adapter, "--data", kit["test"], "--report", out,
            "--limit", "1", "--max-new-tokens", "2"]


@pytest.mark.parametrize("command", ["fuse", "merge", "evaluate"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_adapter_is_refused_at_the_door(case, command, kit, tmp_path, capsys):
    adapter, culprit = stranger(kit, tmp_path, case)
    refused(command_line(command, adapter, kit, tmp_path / "salida"), capsys, tmp_path, culprit, *CASES[case][2])
    assert not (tmp_path / "salida").exists()


@pytest.mark.parametrize("case", ["megatron_config", "unknown field", "truncated weights", "pickle"])
def test_a_bad_adapter_to_stack_on_is_refused(case, kit, tmp_path, capsys):
    adapter, culprit = stranger(kit, tmp_path, case)
    (tmp_path / "receta").mkdir()
    recipe = write_recipe(tmp_path / "receta" / "tiny.yaml", kit["base"], kit["train"], tmp_path / "salida",
                          lora={"stack_on": str(adapter)})
    refused(["train", recipe, *FAST, "training.max_steps=1"], capsys, tmp_path, culprit, *CASES[case][2])
    assert not (tmp_path / "salida").exists() and not (tmp_path / "salida.work").exists()


def test_the_cli_refuses_megatron_without_importing_it(kit, tmp_path, marker_packages):
    """End to end, in a fresh process where `megatron.core` is importable: merge says why, imports nothing."""
    adapter, culprit = stranger(kit, tmp_path, "megatron_config")
    before = fingerprint(tmp_path)
    env = cli_env(PYTHONPATH=f"{marker_packages['path']}:{ROOT}")
    result = run_cli("merge", adapter, "--out", tmp_path / "salida", env=env)
    assert_refused(result.returncode, result.stderr, culprit)
    assert "megatron_config is set" in result.stderr  # the door spoke, not PEFT after importing
    assert fingerprint(tmp_path) == before


def tensors_pickle(kit: dict, folder, payload=None):
    """The good adapter's weights as adapter_model.bin (pickle), plus `payload` if given."""
    tensors = load_file(kit["a"] / WEIGHTS)
    (folder / WEIGHTS).unlink()
    torch.save({**tensors, **({"x": payload} if payload is not None else {})}, folder / "adapter_model.bin")


class WritesAFile:
    """Unpickling this would create `path`: what a malicious adapter_model.bin does."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("command", ["fuse", "merge"])
def test_trusted_pickle_loads_with_allow_pickle(command, kit, tmp_path, capsys):
    adapter = tmp_path / "pickle"
    shutil.copytree(kit["a"], adapter)
    tensors_pickle(kit, adapter)
    assert main([str(arg) for arg in command_line(command, adapter, kit, tmp_path / "salida")]) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    code = main([str(arg) for arg in command_line(command, adapter, kit, tmp_path / "salida")] + ["--allow-pickle"])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert (tmp_path / "salida" / "spanish_ft_record.json").is_file()


@pytest.mark.parametrize("command", ["fuse", "merge", "evaluate"])
def test_code_in_an_allowed_pickle_is_refused_without_running(command, kit, tmp_path, capsys):
    adapter = tmp_path / "pickle"
    shutil.copytree(kit["a"], adapter)
    ran = tmp_path / "ran-code"
    tensors_pickle(kit, adapter, WritesAFile(ran))
    argv = [*command_line(command, adapter, kit, tmp_path / "salida"), "--allow-pickle"]
    refused(argv, capsys, tmp_path, f"adapter_model.bin in {adapter}", "not a file of plain tensors")
    assert not ran.exists()


def test_fuse_refuses_several_problems_at_once(kit, tmp_path, capsys):
    adapter, culprit = stranger(kit, tmp_path, "wrong types")
    set_config(lora_magic=1, bias="sometimes")(adapter)
    err = refused(command_line("fuse", adapter, kit, tmp_path / "salida"), capsys, tmp_path, culprit)
    for field in ("'lora_magic'", "r is '16'", "lora_alpha is True", "target_modules is 5", "bias is 'sometimes'"):
        assert field in err


@pytest.mark.parametrize("unset", [None, False, {}, []])
def test_a_newer_peft_field_left_unset_is_accepted(unset, kit, tmp_path):
    """PEFT writes every LoraConfig field, used or not (0.22 added astra_config: null): a field we
    do not know, left unset, changes nothing; set, it is refused (the "unknown field" case)."""
    from training.adapters.fuse import FuseSettings, fuse_adapters

    adapter = tmp_path / "nuevo"
    shutil.copytree(kit["a"], adapter)
    set_config(lora_future_config=unset, astra_config=None)(adapter)
    fused = fuse_adapters(FuseSettings(adapters=[adapter, kit["a"]], out=tmp_path / "con", name="con"))
    plain = fuse_adapters(FuseSettings(adapters=[kit["a"], kit["a"]], out=tmp_path / "sin", name="sin"))
    ours, theirs = load_file(fused.out_dir / WEIGHTS), load_file(plain.out_dir / WEIGHTS)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    set_config(lora_future_config=0)(adapter)  # 0 is a value, not "off"
    with pytest.raises(ValueError, match="unknown field 'lora_future_config' set"):
        fuse_adapters(FuseSettings(adapters=[adapter, kit["a"]], out=tmp_path / "refusado", name="refusado"))
    assert not (tmp_path / "refusado").exists()


# --- the extension: names from the LoRA menu resolve strictly inside its folder ---

@pytest.fixture
def webui(kit, tmp_path) -> dict:
    """A webui LoRA folder with two good adapters, and a good adapter outside it."""
    loras = tmp_path / "webui" / "loras"
    loras.mkdir(parents=True)
    for name in ("llama2-a", "llama2-b"):
        shutil.copytree(kit["a"], loras / name)
    outside = tmp_path / "fuera" / "ajeno"
    shutil.copytree(kit["a"], outside)
    return {"loras": loras, "outside": outside}


def refused_in_spanish(webui: dict, tmp_path, names: tuple, *said: str) -> str:
    before = fingerprint(tmp_path)
    with pytest.raises(ValueError) as error:
        fuse_selection(webui["loras"], names)
    message = str(error.value)
    for text in said:
        assert text in message, message
    assert fingerprint(tmp_path) == before  # nothing read outside made into a folder, no stray output
    return message


@pytest.mark.parametrize("name, reason", [
    ("../../fuera/ajeno", "sale de la carpeta de adaptadores"),
    ("..", "sale de la carpeta de adaptadores"),
    ("llama2-a/../../../fuera/ajeno", "sale de la carpeta de adaptadores"),
    ("sub/llama2-a", "es una ruta"),
    ("", "está vacío"),
    ("no-existe", "no existe"),
])
def test_the_extension_refuses_names_outside_its_lora_folder(name, reason, webui, tmp_path):
    refused_in_spanish(webui, tmp_path, ("llama2-a", name), f"«{name}» no es un adaptador de {webui['loras']}", reason)


def test_the_extension_refuses_an_absolute_path_as_a_name(webui, tmp_path):
    name = str(webui["outside"])
    refused_in_spanish(webui, tmp_path, ("llama2-a", name), f"«{name}»", "es una ruta")


def test_the_extension_refuses_a_link_to_an_adapter_outside(webui, tmp_path):
    (webui["loras"] / "enlace").symlink_to(webui["outside"], target_is_directory=True)
    refused_in_spanish(webui, tmp_path, ("llama2-a", "enlace"), "«enlace»", "es un enlace a una carpeta fuera")


def test_the_extension_refuses_an_output_linked_outside(webui, tmp_path):
    """fusion-<a>+<b> a link out of the LoRA folder: nothing is written through it."""
    target = tmp_path / "fuera" / "destino"
    target.mkdir()
    names = ("llama2-a", "llama2-b")
    (webui["loras"] / fusion_name(names)).symlink_to(target, target_is_directory=True)
    refused_in_spanish(webui, tmp_path, names, f"«{fusion_name(names)}»", "es un enlace")


def test_a_link_inside_the_lora_folder_is_fine(webui):
    (webui["loras"] / "alias").symlink_to(webui["loras"] / "llama2-b", target_is_directory=True)
    assert fuse_selection(webui["loras"], ("llama2-a", "alias")).rank == 4


def test_the_extension_refuses_a_megatron_adapter_in_its_folder(webui, tmp_path):
    set_config(megatron_config={"tensor_model_parallel_size": 1})(webui["loras"] / "llama2-b")
    refused_in_spanish(webui, tmp_path, ("llama2-a", "llama2-b"),
                       f"{CONFIG} in {webui['loras'] / 'llama2-b'}", "megatron_config is set")
    infos, problems = scan_adapters(webui["loras"])
    assert "llama2-b" not in infos and len(problems) == 1
    assert "«llama2-b»: configuración del adaptador rechazada" in problems[0] and "megatron_config" in problems[0]
