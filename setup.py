"""Build the optional C speedups; everything else is in pyproject.toml.

``embmemo._speedups`` needs a C compiler and the Python headers. It uses OpenSSL's
libcrypto for SHA-256 when its headers are there (faster on CPUs with SHA instructions),
else its own SHA-256, so a plain compiler suffices (``EMBMEMO_BUILTIN_SHA256=1`` asks for
that: portable wheels that link nothing). Without a compiler the build goes on without
the module and embmemo uses its pure-Python loops (same results, slower reads);
``embmemo info`` says which. ``EMBMEMO_NO_SPEEDUPS=1`` skips it.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildSpeedups(build_ext):
    """Try the module with OpenSSL's SHA-256, then with the built-in one."""

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("EMBMEMO_BUILTIN_SHA256", "") in ("", "0"):
            ext.libraries.append("crypto")
            ext.define_macros.append(("EMBMEMO_OPENSSL", "1"))
            try:
                super().build_extension(ext)
                return
            except Exception as exc:  # no OpenSSL headers or library: the built-in SHA-256
                print(f"embmemo: building the C loops with the built-in SHA-256 ({exc})",
                      file=sys.stderr)
                ext.libraries.remove("crypto")
                ext.define_macros.remove(("EMBMEMO_OPENSSL", "1"))
                self.force = True  # compile again, without OpenSSL
        super().build_extension(ext)


wanted = os.environ.get("EMBMEMO_NO_SPEEDUPS", "") in ("", "0") and sys.byteorder == "little"
speedups = Extension(
    "embmemo._speedups",
    sources=["embmemo/_speedups.c"],
    depends=["embmemo/_sha256.h"],
    extra_compile_args=["-O2"] if sys.platform != "win32" else [],
    optional=True,  # no compiler: a warning, and the pure-Python loops
)
setup(ext_modules=[speedups] if wanted else [], cmdclass={"build_ext": BuildSpeedups})
