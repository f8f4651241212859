"""Attribute docstrings of config dataclasses, inherited ones included, written into the class's own docstring so
that ``--help`` shows a sentence for every key.

jsonargparse reads a dataclass's attribute docstrings from that class's own source only, so the fields midtrain's
``TrainArgs`` inherits from litgpt's, and the data module's fields inherited from ``MixtureArgs``, would show their
type alone. ``document_fields`` collects each field's docstring from the first class of the MRO that documents it
(litgpt's words for litgpt's keys, read from litgpt itself) and appends an ``Args:`` section, which jsonargparse
reads as the fields' help.
"""

from __future__ import annotations

import dataclasses

_MARK = "\n\nArgs:\n"


def field_descriptions(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring (one line), from the first class in ``cls``'s MRO that gives one."""
    import docstring_parser

    found: dict[str, str] = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            parsed = docstring_parser.parse_from_object(klass)
        except Exception:  # a class whose source is not available (built in, compiled): nothing to read
            continue
        for param in parsed.params:
            if param.arg_name not in found and param.description:
                found[param.arg_name] = " ".join(param.description.split())
    return found


def document_fields(cls: type) -> type:
    """Class decorator: append an ``Args:`` section with every documented field to ``cls.__doc__``."""
    docs = field_descriptions(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name in docs]
    head = (cls.__doc__ or "").split(_MARK)[0].rstrip()
    cls.__doc__ = head + _MARK + "\n".join(f"    {name}: {docs[name]}" for name in names)
    return cls
