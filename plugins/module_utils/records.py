# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dataclasses whose methods are not compiled at import.

``dataclasses.dataclass`` writes a class's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``
and, when frozen, ``__setattr__`` and ``__delattr__`` as source text and compiles each one
(``dataclasses._create_fn``): ~0.5 ms a class, ~14 ms of every module process for the
collection's ~30 classes (docs/design.md "Speed"). So a typed value is declared as::

    @dataclass(init=False, repr=False, eq=False)
    class DiskSpec(Value):        # frozen; Record for a mutable one
        name: str
        tags: tuple = field(default_factory=tuple)

and is a dataclass like any other (``fields``, ``asdict``, ``replace``, ``field()``), with those
methods written once here: same arguments, same repr, same equality and hash, same
``FrozenInstanceError``.
"""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, fields

_FIELDS = {}  # class -> its dataclasses.fields(), looked up once


def _fields(cls) -> tuple:
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = fields(cls)
        if any(not param.init for param in found):
            raise TypeError("%s: field(init=False) is not supported by records" % cls.__qualname__)
    return found


def _init(self, *args, **kwargs) -> None:
    cls = type(self)
    params = _fields(cls)
    if len(args) > len(params):
        raise TypeError("%s() takes %d positional arguments but %d were given"
                        % (cls.__qualname__, len(params), len(args)))
    for param, arg in zip(params, args):
        if param.name in kwargs:
            raise TypeError("%s() got multiple values for argument %r" % (cls.__qualname__, param.name))
        object.__setattr__(self, param.name, arg)
    for param in params[len(args):]:
        if param.name in kwargs:
            arg = kwargs.pop(param.name)
        elif param.default is not MISSING:
            arg = param.default
        elif param.default_factory is not MISSING:
            arg = param.default_factory()
        else:
            raise TypeError("%s() missing required argument: %r" % (cls.__qualname__, param.name))
        object.__setattr__(self, param.name, arg)
    if kwargs:
        raise TypeError("%s() got an unexpected keyword argument %r" % (cls.__qualname__, next(iter(kwargs))))


def _repr(self) -> str:
    return "%s(%s)" % (type(self).__qualname__, ", ".join(
        "%s=%r" % (param.name, getattr(self, param.name)) for param in _fields(type(self)) if param.repr))


def _compared(self) -> tuple:
    return tuple(getattr(self, param.name) for param in _fields(type(self)) if param.compare)


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _compared(self) == _compared(other)


_WRITTEN_HERE = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


def _refuse_own_methods(cls) -> None:
    own = [name for name in _WRITTEN_HERE if name in cls.__dict__]
    if own:
        raise TypeError("%s defines %s, which records write" % (cls.__qualname__, ", ".join(own)))


class Value:
    """A frozen dataclass's methods (``@dataclass(frozen=True)``)."""

    __slots__ = ()
    __init__ = _init
    __repr__ = _repr
    __eq__ = _eq

    def __hash__(self) -> int:
        return hash(_compared(self))

    def __setattr__(self, name, _value):
        raise FrozenInstanceError("cannot assign to field %r" % name)

    def __delattr__(self, name):
        raise FrozenInstanceError("cannot delete field %r" % name)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _refuse_own_methods(cls)


class Record:
    """A mutable dataclass's methods (``@dataclass``): compared by value, so unhashable."""

    __slots__ = ()
    __init__ = _init
    __repr__ = _repr
    __eq__ = _eq
    __hash__ = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _refuse_own_methods(cls)
