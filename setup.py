"""The optional fused kernel, vsml_es._fused (issue 16); everything else is in pyproject.toml.

The extension is ``optional``: where it cannot be built (no C++ compiler, no Python headers,
a compiler without GCC vector extensions) pip still installs vsml-es, and ``model.kernel: jax``
(the default) works as before. ``VSML_ES_BUILD_FUSED=0`` skips it on purpose.

Flags are chosen for a binary that may run on another machine than the one that built it (a
wheel, a shared install): no ``-march=native``. The kernel is compiled for the baseline and,
through target pragmas, for AVX2+FMA and AVX-512 as well, and picks one at run time
(csrc/vsml_fused_dispatch.h). ``-ffp-contract=fast`` lets the compiler fuse multiply-adds
inside those variants (XLA:CPU's dots do too); no ``-ffast-math``, which would reassociate and
drop the NaN semantics of the tanh clamp.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup


def jax_ffi_include() -> str | None:
    """jaxlib's XLA FFI headers (jax.ffi.include_dir()): jaxlib is a build requirement."""
    try:
        import jaxlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    return path if os.path.isfile(os.path.join(path, "xla", "ffi", "api", "ffi.h")) else None


def extensions() -> list[Extension]:
    if os.environ.get("VSML_ES_BUILD_FUSED", "1") == "0":
        return []
    include = jax_ffi_include()
    if include is None:
        print("vsml-es: jaxlib's FFI headers not found; the fused kernel is not built",
              file=sys.stderr)
        return []
    return [Extension(
        "vsml_es._fused",
        sources=["csrc/vsml_fused.cc"],
        include_dirs=["csrc"],
        depends=["csrc/vsml_fused_args.h", "csrc/vsml_fused_dispatch.h",
                 "csrc/vsml_fused_kernel.h"],
        language="c++",
        # -isystem: jaxlib's headers are not ours to warn about.
        extra_compile_args=["-isystem", include, "-std=gnu++17", "-O3", "-ffp-contract=fast",
                            "-fvisibility=hidden", "-Wno-psabi", "-g0"],
        optional=True,
    )]


setup(ext_modules=extensions())
