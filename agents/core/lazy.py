"""Heavy libraries loaded on first use.

A command, the web app and beat start without pandas, numpy, pyarrow or scikit-learn: a module that needs one
names it here (``pd = lazy("pandas")``) and the library is imported the first time one of its attributes is read.
After that the stand-in holds the library's names itself, so reading ``pd.DataFrame`` costs a plain attribute
lookup. Modules that use a stand-in in annotations start with ``from __future__ import annotations``.
"""
import importlib
from types import ModuleType


class LazyModule(ModuleType):
    """Stands in for a module until one of its attributes is read; then imports it and takes its names."""

    def __getattr__(self, name: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, name)


def lazy(name: str) -> ModuleType:
    """The module ``name``, imported when first used (see the module docstring)."""
    return LazyModule(name)
