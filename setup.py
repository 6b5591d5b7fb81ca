"""Build the optional fused CPU kernel (nsjax/_kernels/project_cpu.cc) against jaxlib's FFI
headers.  Everything else is declared in pyproject.toml.  Without a C++ compiler the build
of the extension is skipped (``optional=True``) and nsjax uses XLA's matmuls instead."""

import os

from setuptools import Extension, setup


def _ffi_include() -> list[str]:
    try:
        import jaxlib  # the build requirement (pyproject.toml [build-system])

        inc = os.path.join(os.path.dirname(jaxlib.__file__), "include")
        return [inc] if os.path.isdir(os.path.join(inc, "xla", "ffi", "api")) else []
    except ImportError:
        return []


setup(
    ext_modules=[
        Extension(
            "nsjax._project_cpu",
            sources=["nsjax/_kernels/project_cpu.cc"],
            include_dirs=_ffi_include(),
            depends=["nsjax/_kernels/project_body.inc", "nsjax/_kernels/project_amx.inc"],
            language="c++",
            extra_compile_args=["-std=c++17", "-O3", "-Wno-attributes", "-Wno-return-type"],
            optional=True,
        )
    ]
)
