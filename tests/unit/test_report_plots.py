"""Report plots cope with degenerate inputs (warnings are errors in this suite)."""

from __future__ import annotations

import base64

from precise_mrd.pipeline.report import _background_plot


def test_background_plot_with_every_rate_at_the_floor() -> None:
    # as after an artefact filter on a small sample: every class at the rate floor, +- 1 ulp
    floor = [9.999999999999998e-08, 1e-07, 1.0000000000000001e-07]
    rows = [
        {"molecule_type": kind, "sbs_class": f"A[C>{alt}]A", "rate": rate}
        for kind in ("simplex", "duplex")
        for alt, rate in zip("AGT", floor, strict=True)
    ]
    plot = _background_plot(rows)
    assert plot is not None
    assert base64.b64decode(plot.png_base64).startswith(b"\x89PNG")


def test_background_plot_without_rows() -> None:
    assert _background_plot([]) is None
