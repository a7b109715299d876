"""records.Value / records.Record subclasses under @dataclass(init=False, repr=False,
eq=False) behave as dataclass(frozen=True) / dataclass, the real dataclasses being the
oracle, and the collection's imports compile no dataclass method."""

# The classes are made dataclasses by a decorator passed as a parameter, which pylint does not
# follow, so it takes their field() calls for calls outside a dataclass.
# pylint: disable=invalid-field-call

import copy
import dataclasses
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, asdict, field, fields, replace

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import records


OWN_METHODS = dataclasses.dataclass(init=False, repr=False, eq=False)


def _define(decorate, base=object):
    class Disk(base):
        """A disk."""

        name: str
        size: int = 8
        tags: tuple = ()
        props: dict = field(default_factory=dict)
        note: str = field(default="", repr=False, compare=False)

    return decorate(Disk)


FROZEN = [(_define(OWN_METHODS, records.Value), _define(dataclasses.dataclass(frozen=True)))]
MUTABLE = [(_define(OWN_METHODS, records.Record), _define(dataclasses.dataclass))]
CALLS = [(("a",), {}), (("a", 4), {"tags": ("x",)}), ((), {"name": "b", "props": {"k": 1}}),
         (("a", 4, ("t",), {"p": 2}, "n"), {})]


@pytest.mark.parametrize("ours,theirs", FROZEN + MUTABLE)
@pytest.mark.parametrize("args,kwargs", CALLS)
def test_construction_repr_asdict_and_replace_match_dataclasses(ours, theirs, args, kwargs):
    mine, oracle = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert repr(mine) == repr(oracle)
    assert asdict(mine) == asdict(oracle)
    assert [f.name for f in fields(mine)] == [f.name for f in fields(oracle)]
    assert asdict(replace(mine, size=99)) == asdict(replace(oracle, size=99))
    assert isinstance(replace(mine, size=99), ours)


@pytest.mark.parametrize("ours,theirs", FROZEN + MUTABLE)
@pytest.mark.parametrize("args,kwargs", [((), {}), (("a",), {"name": "b"}), (("a",), {"colour": 1}),
                                         (("a", 1, (), {}, "", 6), {})])
def test_bad_arguments_raise_type_error_like_dataclasses(ours, theirs, args, kwargs):
    with pytest.raises(TypeError):
        theirs(*args, **kwargs)
    with pytest.raises(TypeError, match="Disk"):
        ours(*args, **kwargs)


@pytest.mark.parametrize("ours,theirs", FROZEN + MUTABLE)
def test_equality_follows_compared_fields(ours, theirs):
    pairs = [(("a",), ("a",)), (("a",), ("b",)), (("a", 1), ("a", 2)),
             (("a", 1, (), {}, "x"), ("a", 1, (), {}, "y"))]  # note: compare=False
    for left, right in pairs:
        assert (ours(*left) == ours(*right)) == (theirs(*left) == theirs(*right))
        assert (ours(*left) != ours(*right)) == (theirs(*left) != theirs(*right))
    assert ours("a") != theirs("a")  # another class, as between two dataclasses
    assert copy.deepcopy(ours("a", props={"k": [1]})) == ours("a", props={"k": [1]})


def test_default_factory_gives_each_instance_its_own():
    ours = FROZEN[0][0]
    first, second = ours("a"), ours("b")
    first.props["k"] = 1
    assert second.props == {}


def _define_hashable(decorate, base=object):
    class Slot(base):
        bus: str
        addr: int = 0
        label: str = field(default="", compare=False)

    return decorate(Slot)


def test_frozen_values_refuse_assignment_and_hash_like_dataclasses():
    ours, theirs = FROZEN[0]
    disk = ours("a")
    with pytest.raises(FrozenInstanceError):
        disk.size = 1
    with pytest.raises(FrozenInstanceError):
        del disk.name
    assert disk.size == 8
    for make in (ours, theirs):  # a dict field is unhashable in both
        with pytest.raises(TypeError):
            hash(make("a"))
    mine, oracle = _define_hashable(OWN_METHODS, records.Value), _define_hashable(dataclasses.dataclass(frozen=True))
    for args in (("pci",), ("pci", 3), ("pci", 3, "x")):
        assert hash(mine(*args)) == hash(oracle(*args))
    assert len({mine("pci", 3, "x"), mine("pci", 3, "y"), mine("pci", 4)}) == 2


def test_mutable_records_take_assignment_and_are_unhashable_like_dataclasses():
    ours, theirs = MUTABLE[0]
    disk = ours("a")
    disk.size = 1
    assert disk == ours("a", 1)
    with pytest.raises(TypeError):
        hash(theirs("a"))
    with pytest.raises(TypeError):
        hash(disk)


def test_a_class_that_writes_its_own_method_or_an_init_false_field_is_refused():
    with pytest.raises(TypeError, match="__eq__"):
        class Own(records.Value):  # pylint: disable=unused-variable
            name: str = ""

            def __eq__(self, other):
                return True

    @OWN_METHODS
    class Late(records.Record):
        name: str = field(default="", init=False)

    with pytest.raises(TypeError, match="init=False"):
        Late()


def test_importing_every_module_compiles_no_dataclass_method():
    """The point of records (docs/design.md "Speed"): dataclasses compile a class's methods
    with one exec() of ``def __create_fn__(...): <methods> return <their names>``, per method
    up to Python 3.12 (_create_fn), per class from 3.13 on (_FuncBuilder, also for a class
    that gets no method: ``return ()``). A global ``exec`` in the dataclasses module, which
    shadows the builtin, sees either and records the names returned."""
    probe = (
        "import builtins, dataclasses, pkgutil, importlib\n"
        "made = []\n"
        "def exec(text, *a):\n"
        "    names = text.rstrip().rsplit('return', 1)[1].strip(' (),')\n"
        "    made.extend(n for n in names.split(',') if n)\n"
        "    return builtins.exec(text, *a)\n"
        "dataclasses.exec = exec\n"
        "import ansible.module_utils.basic\n"
        "made.clear()\n"
        "base = 'ansible_collections.blocklayer.qemu.plugins'\n"
        "count = 0\n"
        "for pkg in ('module_utils', 'modules'):\n"
        "    package = importlib.import_module(base + '.' + pkg)\n"
        "    for info in pkgutil.iter_modules(package.__path__):\n"
        "        importlib.import_module(base + '.' + pkg + '.' + info.name)\n"
        "        count += 1\n"
        "collection = list(made)\n"
        "made.clear()\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Control:\n"
        "    x: int = 0\n"
        "print(count, bool(made), collection)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    count, control, made = out.split(" ", 2)
    assert int(count) > 30
    # The probe sees a real dataclass's methods (else this Python compiles them some other way).
    assert control == "True", "the probe saw no method of a real @dataclass(frozen=True) on %s" % sys.version
    assert made.strip() == "[]"
