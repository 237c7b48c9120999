"""Video spec validation: anything the renderer cannot draw is refused, with the field named."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .faults import Fault

MAX_WIDTH, MAX_HEIGHT = 3840, 2160
MIN_SIDE = 16
MAX_FPS = 60
MAX_SLIDES = 200
MAX_SLIDE_SEC = 600.0
MAX_TOTAL_SEC = 1800.0
MAX_TEXT = 200
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_SPEC_KEYS = {"title", "width", "height", "fps", "slides", "fault"}
_SLIDE_KEYS = {"text", "duration", "background", "color"}


class SpecError(ValueError):
    """The spec is refused; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Slide:
    text: str
    duration: float
    background: tuple[int, int, int]  # BGR, as OpenCV draws
    color: tuple[int, int, int]


@dataclass(frozen=True)
class VideoSpec:
    width: int
    height: int
    fps: int
    slides: tuple[Slide, ...]
    title: str = ""
    fault: Fault | None = None

    def slide_frames(self) -> list[int]:
        return [max(1, round(slide.duration * self.fps)) for slide in self.slides]

    @property
    def total_frames(self) -> int:
        return sum(self.slide_frames())


def _int(spec: Mapping[str, object], key: str, low: int, high: int, even: bool = False) -> int:
    value = spec.get(key)
    if type(value) is not int or not low <= value <= high:
        raise SpecError(f"{key}: expected a whole number from {low} to {high}, got {value!r}")
    if even and value % 2:
        raise SpecError(f"{key}: must be even (H.264 yuv420p needs even sizes), got {value}")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise SpecError(f"{field}: expected a string of at most {MAX_TEXT} characters")
    if any(not char.isprintable() for char in value):
        raise SpecError(f"{field}: control characters are not allowed")
    return value


def _colour(value: object, field: str) -> tuple[int, int, int]:
    if not isinstance(value, str) or not _COLOUR.fullmatch(value):
        raise SpecError(f"{field}: expected a colour as #rrggbb, got {value!r}")
    red, green, blue = (int(value[i : i + 2], 16) for i in (1, 3, 5))
    return blue, green, red


def _slide(raw: object, index: int) -> Slide:
    where = f"slides[{index}]"
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected an object with {', '.join(sorted(_SLIDE_KEYS))}")
    unknown = set(raw) - _SLIDE_KEYS
    missing = _SLIDE_KEYS - set(raw)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if missing:
        raise SpecError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    duration = raw["duration"]
    if type(duration) not in (int, float) or not 0 < duration <= MAX_SLIDE_SEC:
        raise SpecError(
            f"{where}.duration: expected seconds, more than 0 and at most {MAX_SLIDE_SEC:g}, "
            f"got {duration!r}"
        )
    return Slide(
        text=_text(raw["text"], f"{where}.text"),
        duration=float(duration),
        background=_colour(raw["background"], f"{where}.background"),
        color=_colour(raw["color"], f"{where}.color"),
    )


def validate_spec(raw: object, *, allow_fault: bool) -> VideoSpec:
    """Return the spec as a :class:`VideoSpec`, or raise :class:`SpecError` naming the field.

    ``allow_fault`` is the worker's ``VIDEO_RENDERER_FAULT_HOOKS``; the CLI passes True because
    only the worker that will run the video can say whether its hooks are on.
    """
    if not isinstance(raw, Mapping):
        raise SpecError("spec: expected a JSON object")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise SpecError(
            f"unknown key(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(_SPEC_KEYS - {'fault'}))}"
        )
    width = _int(raw, "width", MIN_SIDE, MAX_WIDTH, even=True)
    height = _int(raw, "height", MIN_SIDE, MAX_HEIGHT, even=True)
    fps = _int(raw, "fps", 1, MAX_FPS)
    slides = raw.get("slides")
    if not isinstance(slides, list) or not 1 <= len(slides) <= MAX_SLIDES:
        raise SpecError(f"slides: expected a list of 1 to {MAX_SLIDES} slides")
    parsed = tuple(_slide(slide, index) for index, slide in enumerate(slides))
    total = sum(slide.duration for slide in parsed)
    if total > MAX_TOTAL_SEC:
        raise SpecError(f"slides: the video is too long ({total:g} s; at most {MAX_TOTAL_SEC:g} s)")
    title = _text(raw.get("title", ""), "title")
    fault = None
    if "fault" in raw:
        if not allow_fault:
            raise SpecError("fault: fault hooks are disabled on this worker")
        try:
            fault = Fault.parse(raw["fault"])
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    return VideoSpec(width=width, height=height, fps=fps, slides=parsed, title=title, fault=fault)
