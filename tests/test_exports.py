"""The public surface of im_schema and im_sdk: every module has a sorted, complete, resolvable __all__."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import im_schema
import im_sdk
import im_sdk.errors


def _modules(package):
    yield package.__name__
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        yield info.name


MODULES = [*_modules(im_schema), *_modules(im_sdk)]


def _isort_key(name):
    """The order of ruff's RUF022: CONSTANTS, then Classes, then everything else; digits compare as numbers."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def test_the_walk_finds_the_submodules():
    assert {"im_schema.frames", "im_schema.rest", "im_sdk.errors", "im_sdk.realtime.protocol"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_exists_is_sorted_and_unique(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert all(isinstance(item, str) for item in exported)
    assert len(set(exported)) == len(exported), f"duplicates in {name}.__all__"
    assert list(exported) == sorted(exported, key=_isort_key)


@pytest.mark.parametrize("name", MODULES)
def test_every_exported_name_resolves(name):
    module = importlib.import_module(name)
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_public_classes_and_functions_are_exported(name):
    module = importlib.import_module(name)
    unexported = [
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
        and "[" not in attribute  # pydantic's parametrized generics, e.g. Request[Ok]
        and attribute not in module.__all__
    ]
    assert unexported == []


def test_sdk_exports_the_clients_and_every_exception():
    exceptions = {
        name
        for name, value in vars(im_sdk.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == "im_sdk.errors"
    }
    assert "IMError" in exceptions
    assert len(exceptions) >= 15
    assert {"AsyncClient", "Client"} | exceptions <= set(im_sdk.__all__)
    for name in exceptions:
        assert getattr(im_sdk, name) is getattr(im_sdk.errors, name)


def test_sdk_exceptions_share_one_root():
    for name in im_sdk.__all__:
        value = getattr(im_sdk, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert issubclass(value, im_sdk.IMError), name


def test_schema_reexports_are_the_submodules_objects():
    for name in im_schema.__all__:
        value = getattr(im_schema, name)
        home = getattr(value, "__module__", None)
        if home and home.startswith("im_schema."):
            assert getattr(importlib.import_module(home), name) is value, name
