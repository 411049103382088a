"""Label specs: the ``id,name,kind`` lines that say which classes a dataset has."""

from __future__ import annotations

import re
from typing import NamedTuple

from ._errors import TrainConfigError

__all__ = ["LabelSpec", "parse_label_spec"]


class LabelSpec(NamedTuple):
    """Classes of a panoptic task, from a label spec (see :func:`parse_label_spec`)."""

    labels: tuple
    class_names: dict
    thing_list: tuple


def parse_label_spec(spec):
    """Parse the "Dataset labels" of the Train widget: one class per line.

    Parameters
    ----------
    spec : str or sequence of str
        Lines ``<class_id>,<class_name>,<semantic|instance>`` (e.g.
        ``1,er,semantic``); a string may also separate them with ``;``.
        Blank lines and ``#`` comments are skipped, spaces around items are
        ignored.

    Returns
    -------
    LabelSpec
        ``labels`` (sorted ids), ``class_names`` ``{id: name}`` and
        ``thing_list`` (the instance classes).

    Raises
    ------
    TrainConfigError
        For a line without three items, an id that is not a positive integer,
        an empty name, a kind other than semantic/instance, repeated ids or
        names, no classes, or ids that are not exactly 1..n (each class id is
        the index of a logit channel). The message quotes the line.

    Examples
    --------
    >>> parse_label_spec("1,er,semantic\\n2,mito,instance\\n3,nucleus,semantic")
    LabelSpec(labels=(1, 2, 3), class_names={1: 'er', 2: 'mito', 3: 'nucleus'}, thing_list=(2,))
    """
    if isinstance(spec, str):
        lines = spec.replace(";", "\n").splitlines()
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        lines = list(spec)
    else:
        raise TypeError(f"`spec` must be a str or a list of str; got {type(spec).__name__}")
    names, kinds = {}, {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"label line {number} ({raw.strip()!r})"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            raise TrainConfigError(
                f"{where}: expected 3 comma-separated items <class_id>,<class_name>,"
                f"<semantic|instance>, e.g. '2,mito,instance'; got {len(parts)}"
            )
        id_text, name, kind = parts
        if not re.fullmatch(r"\d+", id_text) or int(id_text) < 1:
            raise TrainConfigError(f"{where}: class id {id_text!r} must be an integer >= 1")
        class_id = int(id_text)
        if not name:
            raise TrainConfigError(f"{where}: the class name is empty")
        kind = kind.lower()
        if kind not in ("semantic", "instance"):
            raise TrainConfigError(
                f"{where}: class type {parts[2]!r} must be 'semantic' or 'instance'")
        if class_id in names:
            raise TrainConfigError(f"{where}: class id {class_id} is given twice")
        if name in names.values():
            raise TrainConfigError(f"{where}: class name {name!r} is given twice")
        names[class_id] = name
        kinds[class_id] = kind
    if not names:
        raise TrainConfigError("the label spec holds no classes; give lines like "
                               "'1,mito,instance'")
    ids = sorted(names)
    if ids != list(range(1, len(ids) + 1)):
        raise TrainConfigError(
            f"class ids must be 1..{len(ids)} without gaps (each id is the index of a "
            f"logit channel); got {ids}"
        )
    return LabelSpec(tuple(ids), {i: names[i] for i in ids},
                     tuple(i for i in ids if kinds[i] == "instance"))
