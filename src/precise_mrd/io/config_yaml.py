"""YAML for configs, parsed as hostile input: plain data, bounded, no surprises.

:func:`load_config_yaml` is ``yaml.safe_load`` (so no tag constructs an object) with the limits a
config never needs to pass: no anchors or aliases (a 342-byte "billion laughs" document expands
to hundreds of megabytes through them), at most :data:`MAX_DEPTH` levels of nesting, scalars of
at most :data:`MAX_SCALAR_CHARS` characters, and no key given twice in one mapping (YAML says
the last wins; a duplicated setting is almost always a mistake). Errors say where (line and
column) and never echo more than a short excerpt of the input.

>>> load_config_yaml("seed: 7\\numi: {strategy: paired}")
{'seed': 7, 'umi': {'strategy': 'paired'}}
>>> try:
...     load_config_yaml("a: &x [1]\\nb: *x")
... except ConfigYamlError as error:
...     print(str(error)[:40])
line 1, column 4: anchors and aliases (&
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 20
MAX_SCALAR_CHARS = 10_000
_EXCERPT = 80


class ConfigYamlError(ValueError):
    """YAML a config may not be; the message is bounded and names the line."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, deep nesting, huge scalars and duplicate keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigYamlError(
                f"{_where(event.start_mark)}: anchors and aliases (&, *) are not accepted in a "
                "config; write the values out"
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigYamlError(
                    f"{_where(event.start_mark)}: nested deeper than {MAX_DEPTH} levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and len(value) > MAX_SCALAR_CHARS:
            raise ConfigYamlError(
                f"{_where(node.start_mark)}: a value of {len(value):,} characters (at most "
                f"{MAX_SCALAR_CHARS:,})"
            )
        return value

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise ConfigYamlError(
                    f"{_where(key_node.start_mark)}: a key must be a plain value"
                ) from None
            if duplicate:
                raise ConfigYamlError(
                    f"{_where(key_node.start_mark)}: key {str(key)[:_EXCERPT]!r} is given twice"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config_yaml(text: str) -> Any:
    """Parse config YAML (see the module); :class:`ConfigYamlError` when it may not be parsed."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except ConfigYamlError:
        raise
    except yaml.MarkedYAMLError as error:
        problem = (error.problem or "invalid YAML")[:_EXCERPT]
        raise ConfigYamlError(f"{_where(error.problem_mark)}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigYamlError(str(error)[:_EXCERPT]) from None
    except RecursionError:
        raise ConfigYamlError(f"nested deeper than {MAX_DEPTH} levels") from None
