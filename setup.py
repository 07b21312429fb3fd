"""Build the optional C speedups; everything else is in pyproject.toml.

``embmemo._speedups`` needs a C compiler, the Python headers and OpenSSL's libcrypto
headers. When any is missing the build goes on without it and embmemo uses its
pure-Python loops (same results, slower reads). ``EMBMEMO_NO_SPEEDUPS=1`` skips it.
"""

import os
import sys

from setuptools import Extension, setup

wanted = os.environ.get("EMBMEMO_NO_SPEEDUPS", "") in ("", "0") and sys.byteorder == "little"
speedups = Extension(
    "embmemo._speedups",
    sources=["embmemo/_speedups.c"],
    libraries=["crypto"],
    extra_compile_args=["-O2"] if sys.platform != "win32" else [],
    optional=True,  # a failed build is a warning, not an error
)
setup(ext_modules=[speedups] if wanted else [])
