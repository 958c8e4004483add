"""Load YAML into pydantic models with errors that name the file, the line and the field.

YAML aliases let a few hundred bytes stand for billions of nodes (the "billion laughs"): documents whose aliases
expand past :data:`MAX_NODES` nodes, or refer to themselves, are refused after composing (which shares aliased
nodes, so it is cheap) and before anything walks the expanded data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from suanli.errors import SpecError

M = TypeVar("M", bound=BaseModel)

MAX_NODES = 100_000  # a job or cluster file has tens to thousands of nodes


def printable(s: str) -> str:
    """``s`` with lone surrogates escaped, so that an error message quoting user input can always be encoded."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Number of nodes ``root`` stands for once every alias is expanded; stops counting past ``limit``.
    Raises ValueError for a node that contains itself. Each distinct node is visited once (memoised)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: deep nesting must not exhaust the Python stack
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.MappingNode):
                kids = [x for kv in node.value for x in kv]
            elif isinstance(node, yaml.SequenceNode):
                kids = list(node.value)
            else:
                kids = []
            size[key] = min(limit + 1, 1 + sum(size[id(k)] for k in kids))
            continue
        if key in size:
            continue
        if key in on_path:
            raise ValueError("an alias refers to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((x, False) for kv in node.value for x in kv if id(x) not in size)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((x, False) for x in node.value if id(x) not in size)
    return size[id(root)]


def load_bounded(text: str, source: str = "<string>", max_nodes: int = MAX_NODES) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document safely: ``(data, root node)``. Raises :class:`SpecError` for invalid YAML and for
    aliases that expand past ``max_nodes`` nodes (checked before the data is built or walked)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        try:
            n = _expanded_size(root, max_nodes)
        except ValueError as e:
            raise SpecError(f"{source}: not accepted: {e}") from None
        if n > max_nodes:
            raise SpecError(f"{source}: YAML aliases expand to more than {max_nodes} nodes; not accepted")
        data = loader.construct_document(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError(printable(f"{where}: not valid YAML: {problem}")) from None
    except RecursionError:
        raise SpecError(f"{source}: not accepted: nested too deeply") from None
    finally:
        loader.dispose()
    return data, root


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at path ``loc`` (the deepest one that exists)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def parse_yaml(text: str, model: type[M], source: str = "<string>") -> M:
    """Validate YAML ``text`` as ``model``; raise :class:`SpecError` naming ``source``, line and field."""
    data, root = load_bounded(text, source)
    if data is None:
        raise SpecError(f"{source}: empty document")
    return validate(data, root, model, source)


def validate(data: Any, root: yaml.Node | None, model: type[M], source: str = "<string>") -> M:
    """Validate parsed ``data`` (from :func:`load_bounded`) as ``model``; errors name ``source``, line and field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors()[:5]:
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(root, loc)
            where = f"{source}:{line}" if line else source
            msg = str(err["msg"]).removeprefix("Value error, ")
            msgs.append(f"{where}: {_field(loc)}: {msg}")
        more = f" (and {len(e.errors()) - 5} more)" if len(e.errors()) > 5 else ""
        raise SpecError(printable("; ".join(msgs) + more)) from None


def load_yaml(path: str | Path, model: type[M]) -> M:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read: {e}") from None
    return parse_yaml(text, model, str(p))
