"""Video spec validation: refused with the field named, nothing drawn."""

from __future__ import annotations

from typing import Any

import pytest

from video_renderer.spec import SpecError, validate_spec

from .video_harness import video_spec


def mutate(**changes: Any) -> dict[str, Any]:
    spec = video_spec()
    spec.update(changes)
    return spec


def slide(**changes: Any) -> dict[str, Any]:
    spec = video_spec()
    spec["slides"][0].update(changes)
    return spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (mutate(codec="vp9"), "unknown key(s) codec"),
        (mutate(width=97), "width: must be even"),
        (mutate(height=8), "height: expected a whole number from 16"),
        (mutate(fps=0), "fps"),
        (mutate(fps=2.5), "fps"),
        (mutate(slides=[]), "slides"),
        (slide(background="red"), "slides[0].background"),
        (slide(color="#12345"), "slides[0].color"),
        (slide(duration=0), "slides[0].duration"),
        (slide(duration=601), "slides[0].duration"),
        (slide(text=7), "slides[0].text"),
        (slide(extra=1), "slides[0]: unknown key(s) extra"),
        (mutate(slides=[video_spec(500)["slides"][0]] * 4), "too long"),
        (mutate(title="x" * 300), "title"),
        ([1, 2], "JSON object"),
        (mutate(fault={"kind": "hold"}), "fault.path: expected an absolute file path"),
        (mutate(fault={"kind": "hold", "path": "release"}), "fault.path"),
        (mutate(fault={"kind": "hang", "path": "/run/release"}), "no path for any other kind"),
    ],
)
def test_refused_with_the_field_named(spec: Any, field: str) -> None:
    with pytest.raises(SpecError) as error:
        validate_spec(spec, allow_fault=True)
    assert field in str(error.value)


def test_fault_only_when_hooks_are_on() -> None:
    spec = video_spec(fault={"kind": "segfault", "at_frame": 3})
    with pytest.raises(SpecError, match="fault hooks are disabled on this worker"):
        validate_spec(spec, allow_fault=False)
    assert validate_spec(spec, allow_fault=True).fault is not None
    with pytest.raises(SpecError, match=r"fault\.kind"):
        validate_spec(video_spec(fault={"kind": "nope"}), allow_fault=True)


def test_valid_spec_counts_frames() -> None:
    spec = validate_spec(video_spec(2.0, fps=12), allow_fault=False)
    assert spec.total_frames == 24
    assert spec.slides[0].background == (0x40, 0x30, 0x20)


def test_a_fault_on_the_first_attempts_only_counts_the_runtimes_attempts() -> None:
    once = validate_spec(video_spec(fault={"kind": "segfault", "on_attempts": 1}), allow_fault=True)
    assert once.fault is not None
    # Attempt numbers are the ledger's: 1 the first delivery, 2 its redelivery after a crash.
    assert [once.fault.active(n) for n in (0, 1, 2)] == [True, True, False]
    always = validate_spec(video_spec(fault={"kind": "segfault"}), allow_fault=True).fault
    assert always is not None
    assert always.active(7)
