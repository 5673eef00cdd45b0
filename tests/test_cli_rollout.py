"""`serving rollout status|history` text, from the documents the server answers with (the same
text the dict-based formatter printed)."""

from __future__ import annotations

from serving.cli.rollout import format_history, format_rollout
from tests.registry.test_rollout_state import WRITTEN

STATUS = {"model": "iris", "primary": 1, "canary": 2, "canary_weight": 25.0, "shadows": [3],
          "rollout": WRITTEN["rollout"]}
HISTORY = {"model": "iris", "rollouts": WRITTEN["past_rollouts"],
           "summary": {"rollouts": 2, "promoted": 0, "rolled_back": 1, "aborted": 1,
                       "rollback_share": 0.5, "mean_time_to_promote_s": None,
                       "mean_time_to_restore_s": 60.0, "promotions_per_day": None}}


# printed by the dict-based formatter for these documents
STATUS_TEXT = """\
model iris: candidate v2 vs baseline v1 — RUNNING
now: primary v1, canary v2 at 25%, shadows [3]
plan: shadow -> 25% -> promote (bake 30s); each step 60s

time         step         decision  by         reason / measured
00:01:00.500 shadow       pass      controller within thresholds
                                              mirrored=400"""

HISTORY_TEXT = """\
model iris: 2 rollouts: 0 promoted, 1 rolled back, 1 aborted (rollback share 50%)
mean time to promote -, mean time to restore 60s, promotions per day -

2025-12-29T09:25:00  v1 -> v3  rolled_back 300s, restored in 60s  rolled back at canary 5%
2025-12-17T19:40:00  v1 -> v2  aborted     400s  aborted by user"""


def test_status_text() -> None:
    assert format_rollout(STATUS) == STATUS_TEXT


def test_history_text() -> None:
    assert format_history(HISTORY) == HISTORY_TEXT
