"""The config reference, ``docs/configuration.md``, generated from the schema's field descriptions
(each field's docstring in :mod:`metarl.experiment.config`). ``python scripts/config_reference.py``
writes it; a test fails when the page and the schema drift apart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel

from metarl.experiment.config import Config

INTRO = """# Configuration

Every field is validated when a run starts; an error names the field, the value and what is
allowed. Unknown fields are errors.

A config file may name other files as `base:` (one, or a list, relative to itself): they are read
the same way and merged in order, and the file's own sections are laid over them key by key. The
shipped configs are built so: `configs/presets/finn2017.yaml` holds the paper's shared settings
(`finn2017-locomotion.yaml` adds the HalfCheetah and Ant ones), `configs/<family>-maml.yaml` the
family's, and every other method or baseline of a family names only what differs from its MAML
config. `configs/ci/tiny.yaml` is an overlay that shrinks any locomotion config to seconds.
"""


def default_text(value: Any) -> str:
    """A default as the table shows it: ``none`` for None, YAML flow style in backticks otherwise."""
    if value is None:
        return "none"
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix(chr(10) + '...').strip()}`"


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted name, default, description) of every field of ``model`` that is not itself a section."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        default = field.default_factory() if field.default_factory is not None else field.default
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")  # a bare | splits a table cell
        yield f"{prefix}{name}", default_text(default), meaning


def sections(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) of ``model`` and of every section below it, depth first."""
    yield prefix, model
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from sections(annotation, f"{prefix}{name}.")


def render() -> str:
    """The whole page."""
    parts = [INTRO]
    for prefix, model in sections():
        table = list(rows(model, prefix))
        if not table:
            continue
        title = prefix.rstrip(".") or "top level"
        doc = " ".join((model.__doc__ or "").split()).replace("``", "`") if model is not Config else ""
        lines = [f"## `{title}`" if prefix else "## Top level", ""]
        if doc:
            lines += [doc, ""]
        lines += ["| field | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in table]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
