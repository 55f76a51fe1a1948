"""List events and their suspects: the models diagnosis engines publish, with FAULT_* bits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self, TypeGuard, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    ValidationError,
    field_validator,
    model_validator,
)

from fmd.errors import FmriError, ProtocolError
from fmd.protocol._common import _json_type, _pydantic_message, _show
from fmd.protocol.classes import _class_problem
from fmd.protocol.fmri import FmdFmri, Fmri, fmri_from_obj, fmri_to_json
from fmd.protocol.timefmt import _NS_PER_S

SUSPECT_PREFIXES: Final = ("fault.", "defect.", "upset.")
ListClass = Literal[
    "list.suspect", "list.isolated", "list.repaired", "list.updated", "list.resolved"
]
LIST_CLASSES: Final[tuple[ListClass, ...]] = (
    "list.suspect",
    "list.isolated",
    "list.repaired",
    "list.updated",
    "list.resolved",
)
_LIST_CLASS_SET: Final = frozenset(LIST_CLASSES)


def is_list_class(cls: str) -> TypeGuard[ListClass]:
    """Whether *cls* is one of the five ``list.*`` classes."""
    return cls in _LIST_CLASS_SET


def _coerce_fmri(value: object) -> object:
    if isinstance(value, Fmri):
        return value
    if isinstance(value, str | Mapping):
        try:
            return fmri_from_obj(value)
        except FmriError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"expected an FMRI string or object, not {_json_type(value)}")


FmriField = Annotated[Fmri, BeforeValidator(_coerce_fmri), PlainSerializer(fmri_to_json)]
FmdFmriField = Annotated[FmdFmri, BeforeValidator(_coerce_fmri), PlainSerializer(fmri_to_json)]


def _coerce_diag_time(value: object) -> object:
    if type(value) is int:
        return value
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(type(v) is int for v in value)
        and value[0] >= 0
        and 0 <= value[1] < 1_000_000
    ):
        return value[0] * _NS_PER_S + value[1] * 1000
    raise ValueError(
        f"'diag-time' must be [seconds, microseconds] or integer nanoseconds, not {_show(value)}"
    )


def _diag_time_json(time_ns: int) -> list[int]:
    sec, ns = divmod(time_ns, _NS_PER_S)
    return [sec, ns // 1000]


def _serialize_diag_time(time_ns: int, info: SerializationInfo) -> int | list[int]:
    return _diag_time_json(time_ns) if info.mode_is_json() else time_ns


_M = TypeVar("_M", bound=BaseModel)


def _validate_model(model: type[_M], data: object, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {what}: {_pydantic_message(exc)}") from None


class Suspect(BaseModel):
    """One entry of a list event's fault-list: a fault, defect or upset with its resources.

    Members unknown to fmd (a diagnosis engine's own payload) are kept.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow", strict=True)

    cls: str = Field(alias="class")
    certainty: int = Field(ge=0, le=100)
    asru: FmriField | None = None
    fru: FmriField | None = None
    resource: FmriField | None = None
    location: str | None = None
    message: bool = True
    retire: bool = True
    response: bool = True

    @field_validator("cls")
    @classmethod
    def _check_class(cls, value: str) -> str:
        if not value.startswith(SUSPECT_PREFIXES):
            raise ValueError(f"suspect class {value!r} must start with fault., defect. or upset.")
        problem = _class_problem(value, "class")
        if problem is not None:
            raise ValueError(problem)
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready form with the protocol's member names."""
        d: dict[str, Any] = {"class": self.cls, "certainty": self.certainty}
        for name in ("asru", "fru", "resource"):
            fmri = getattr(self, name)
            if fmri is not None:
                d[name] = fmri_to_json(fmri)
        if self.location is not None:
            d["location"] = self.location
        d["message"] = self.message
        d["retire"] = self.retire
        d["response"] = self.response
        if self.model_extra:
            d.update(self.model_extra)
        return d

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Suspect:
        """Validate the JSON form; raise ProtocolError naming every bad member."""
        return _validate_model(cls, data, "suspect")


class ListEvent(BaseModel):
    """A ``list.*`` event: a diagnosis (list.suspect) or a later change to its suspects.

    ``fault_status[i]`` holds the FAULT_* bits of ``fault_list[i]``.
    ``diag_time_ns`` is written as ``[seconds, microseconds]`` in JSON.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid", strict=True)

    cls: ListClass = Field(alias="class")
    uuid: str = Field(min_length=1)
    code: str
    diag_time_ns: Annotated[
        int, BeforeValidator(_coerce_diag_time), PlainSerializer(_serialize_diag_time)
    ] = Field(alias="diag-time", ge=0)
    de: FmdFmriField
    fault_list: list[Suspect] = Field(alias="fault-list")
    fault_status: list[Annotated[int, Field(ge=0, le=0xFF)]] = Field(alias="fault-status")
    message: bool = True
    injected: bool = Field(default=False, alias="__injected")
    version: int = Field(default=0, ge=0, le=0xFF)

    @model_validator(mode="before")
    @classmethod
    def _check_list_size(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fault-list-sz" in data:
            data = dict(data)
            size = data.pop("fault-list-sz")
            faults = data.get("fault-list", data.get("fault_list"))
            count = len(faults) if isinstance(faults, list) else None
            if type(size) is not int or size != count:
                raise ValueError(f"'fault-list-sz' is {_show(size)} but 'fault-list' has {count}")
        return data

    @model_validator(mode="after")
    def _check_status(self) -> Self:
        if len(self.fault_status) != len(self.fault_list):
            raise ValueError(
                f"'fault-status' has {len(self.fault_status)} entries"
                f" but 'fault-list' has {len(self.fault_list)}"
            )
        return self

    @property
    def fault_list_sz(self) -> int:
        """The number of suspects."""
        return len(self.fault_list)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON-ready form with the protocol's member names, ``fault-list-sz`` included."""
        d: dict[str, Any] = {
            "version": self.version,
            "class": self.cls,
            "uuid": self.uuid,
            "code": self.code,
            "diag-time": _diag_time_json(self.diag_time_ns),
            "de": fmri_to_json(self.de),
            "fault-list-sz": len(self.fault_list),
            "fault-list": [s.to_json_dict() for s in self.fault_list],
            "fault-status": list(self.fault_status),
            "message": self.message,
        }
        if self.injected:
            d["__injected"] = True
        return d

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ListEvent:
        """Validate the JSON form; raise ProtocolError naming every bad member."""
        return _validate_model(cls, data, "list event")
