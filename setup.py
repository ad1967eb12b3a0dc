"""Build hook for choral's optional compiled DTW kernel.

Everything else lives in pyproject.toml. The kernel is plain C with runtime CPU
dispatch (GCC ``target_clones``); when no compiler is available the build
warns and choral falls back to its NumPy DTW path, so installation never fails
because of it.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build extensions, but keep installing when a compiler is missing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure
            self._warn(error)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            self._warn(error)

    @staticmethod
    def _warn(error: Exception) -> None:
        print(
            f"choral: compiled DTW kernel not built ({error}); "
            "the NumPy fallback will be used",
            file=sys.stderr,
        )


dtw_kernel = Extension(
    "choral.kernels._dtw_simd",
    sources=["kernels/_dtw_simd.c"],
    extra_compile_args=["-O3", "-std=c99", "-fno-math-errno", "-ffp-contract=fast"],
)

setup(ext_modules=[dtw_kernel], cmdclass={"build_ext": OptionalBuildExt})
