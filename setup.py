"""Build and install amanet: the Python package plus the ``amanet._C`` op library.

``python setup.py build_ext --inplace`` (or ``pip install --no-build-isolation -e .``) compiles
the CPU kernels always, and the CUDA kernels when torch is a CUDA build and nvcc is found
(``CUDA_HOME``, default /usr/local/cuda). ``AMANET_CPU_ONLY=1`` forces a CPU-only build.
The architectures: ``AMANET_CUDA_ARCHS``, else the user's ``TORCH_CUDA_ARCH_LIST``, else
7.5;8.0;8.6;8.9;9.0+PTX (``amanet/ops/cuda_archs.py``; the PTX lets newer GPUs JIT-compile).
A CUDA build of torch without nvcc builds CPU-only and says so.

Dependencies: the wheel requires the torch release it was compiled against (the op library's
C++ ABI is that release's) and the libraries every command needs; the rest are extras
(``pip install 'amanet[video]'`` ...), see ``amanet/extras.py``. requirements.txt stays the pinned
set ``make`` installs. ``AMANET_REUSE_BUILT_EXT=1`` packages the ``amanet/_C*.so`` that
``make build`` already compiled instead of compiling again (tests/test_packaging.py uses it).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _module(*path):
    """A standard-library-only module of the package, by file path: importing the package
    here would need torch & co."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("amanet_" + path[-1][:-3],
                                                  os.path.join(ROOT, "amanet", *path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return home if os.path.isfile(os.path.join(home, "bin", "nvcc")) else None


def _want_cuda(torch):
    if os.environ.get("AMANET_CPU_ONLY", "0") not in ("", "0"):
        return False
    if torch.version.cuda is not None and _cuda_home() is None:
        print(f"WARNING: torch is a CUDA {torch.version.cuda} build but nvcc was not found "
              "(set CUDA_HOME): building the op library WITHOUT CUDA kernels; on a GPU the "
              "ops fall back to the reference implementations", file=sys.stderr)
        return False
    return torch.version.cuda is not None


def _nvidia_include_dirs():
    """Headers of the pip CUDA libraries (ATen's CUDA headers need cusparse.h from there)."""
    dirs = []
    for p in sys.path:
        dirs += glob.glob(os.path.join(p, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(p, "nvidia", "*", "include"))
    return sorted(set(d for d in dirs if os.path.isdir(d)))


def _extensions():
    # torch.utils.cpp_extension reads CUDA_HOME when imported: set it first (a `nvcc` wrapper
    # on PATH would otherwise make it guess /usr/local, where no CUDA libraries are).
    if _cuda_home() and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = _cuda_home()
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    rel = lambda paths: sorted(os.path.relpath(p, ROOT) for p in paths)  # noqa: E731
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "ops", "*.cpp"))
                  + glob.glob(os.path.join(ROOT, "csrc", "ops", "cpu", "*.cpp"))
                  + glob.glob(os.path.join(ROOT, "csrc", "ops", "autograd", "*.cpp"))
                  + glob.glob(os.path.join(ROOT, "csrc", "ops", "autocast", "*.cpp")))
    include_dirs = [os.path.join(ROOT, "csrc", "ops")]
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    define_macros = []
    if _want_cuda(torch):
        ca = _module("ops", "cuda_archs.py")
        archs = ca.resolve_arch_list(os.environ)
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += rel(glob.glob(os.path.join(ROOT, "csrc", "ops", "cuda", "*.cu")))
        arch_str = ",".join(ca.arch_names(archs))
        define_macros += [("AMANET_WITH_CUDA", None), ("AMANET_CUDA_ARCHS", f'"{arch_str}"')]
        nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        return [CUDAExtension("amanet._C", sources, include_dirs=include_dirs + _nvidia_include_dirs(),
                              define_macros=define_macros,
                              extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                              extra_link_args=["-fopenmp"])]
    return [CppExtension("amanet._C", sources, include_dirs=include_dirs,
                         define_macros=define_macros, extra_compile_args={"cxx": cxx},
                         extra_link_args=["-fopenmp"])]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class BuildOrReuse(BuildExtension):
        def build_extension(self, ext):
            built = glob.glob(os.path.join(ROOT, "amanet", "_C*.so"))
            target = os.path.abspath(self.get_ext_fullpath(ext.name))
            if os.environ.get("AMANET_REUSE_BUILT_EXT", "0") not in ("", "0") and built:
                if os.path.abspath(built[0]) != target:   # (equal: built in place already)
                    import shutil
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(built[0], target)
                return
            super().build_extension(ext)

    return {"build_ext": BuildOrReuse.with_options(use_ninja=True)}


def _install_requires():
    """What every command needs; torch: the release the op library is compiled against."""
    import torch
    release = torch.__version__.split("+")[0]
    return [f"torch=={release}", "torchvision", "numpy>=1.24", "pillow>=9.1",
            "opencv-python-headless>=4.8", "PyYAML>=6.0", "tqdm>=4.60"]


setup(
    name="amanet",
    version="0.1.0",
    description="Deployable AMANet / DensePose inference engine (PyTorch, C++/CUDA ops, export)",
    packages=find_packages(include=["amanet", "amanet.*"]),
    package_data={"amanet": ["assets/*", "configs/*.yaml"]},
    python_requires=">=3.10",
    install_requires=_install_requires(),
    extras_require=_module("extras.py").EXTRAS,
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
    entry_points={"console_scripts": ["amanet=amanet.cli:main"]},
    zip_safe=False,
)
