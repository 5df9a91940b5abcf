"""The demo data set comes with example segments whose stored members match their conditions."""

from __future__ import annotations

from sqlalchemy import select

from automation.demo import load_demo
from automation.segments.compiler import count_matching
from automation.segments.models import Segment, SegmentKind
from automation.segments.service import segment_filter


def test_demo_segments_are_materialised_and_agree_with_live_counts(sqlite_url, tmp_path):
    from conftest import make_settings

    from automation.db import make_engine, make_session_factory
    from automation.runtime import build_runtime, use_runtime

    use_runtime(build_runtime(make_settings(tmp_path, sqlite_url)))
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        summary = load_demo(session, contacts=300)
        assert "10 segments" in summary
        segments = list(session.scalars(select(Segment).order_by(Segment.id)))
        assert {s.kind for s in segments} == {SegmentKind.DYNAMIC, SegmentKind.STATIC}
        for segment in segments:
            assert segment.member_count == count_matching(session, segment_filter(segment))
        assert any(s.member_count > 0 for s in segments if s.name == "Paying customers")
    engine.dispose()
    use_runtime(None)
