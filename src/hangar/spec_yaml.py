"""Reading task YAML safely: duplicate keys refused, alias bombs and recursive aliases refused,
every problem a `SpecError` with the line. Imported only when a YAML file is read (PyYAML costs
a few tens of milliseconds to import)."""

from __future__ import annotations

from typing import Any

import yaml

from hangar.errors import SpecError

# Aliases may add at most this many nodes to the document (a "billion laughs" adds billions).
MAX_ALIAS_EXPANSION = 100_000


class _TaskLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            ident = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if ident in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key_node.value!r} (first on line {seen[ident]}); "
                    "keep only one",
                    key_node.start_mark,
                )
            seen[ident] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> object:
    try:
        loader = _TaskLoader(text)
    except yaml.YAMLError as exc:
        raise SpecError(
            f"not valid YAML: {exc}. To fix: remove control characters.", where
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, where)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}" if mark is not None else where
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(
            f"not valid YAML: {problem}. To fix: correct the YAML syntax.", at
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            f"not valid YAML: {exc}. To fix: correct the YAML (or re-save it as plain text).", where
        ) from None
    except RecursionError:
        raise SpecError(
            "the YAML is nested too deeply. To fix: flatten the structure.", where
        ) from None
    finally:
        loader.dispose()


def _check_aliases(root: yaml.Node, where: str) -> None:
    """SpecError when aliases are recursive or expand the document by too many nodes."""
    expanded: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        ident = id(node)
        children = _children(node)
        if done:
            open_.discard(ident)
            expanded[ident] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[ident] - len(expanded) > MAX_ALIAS_EXPANSION:
                raise SpecError(
                    "YAML aliases expand this file too far (an alias bomb?). To fix: write the "
                    "values out instead of repeating anchors.",
                    where,
                )
            continue
        if ident in expanded:
            continue
        if ident in open_:
            raise SpecError(
                f"a YAML alias refers to itself (line {node.start_mark.line + 1}). To fix: "
                "remove the recursive alias.",
                where,
            )
        open_.add(ident)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in expanded)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
