"""Reading logged records back from a directory sink's segments: feedback for a request older
than the in-memory store joins what was logged for it. Runs in a worker thread (file I/O)."""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime

import numpy as np
import orjson

from serving.payload.record import Answer, answer
from serving.payload.sinks import segment_files

MAX_SEGMENTS = 50  # newest segments searched per lookup: bounds the cost of unknown ids
_PREFIX = b'{"id":"'  # every record starts with its id (record.json_line)


def _answer(doc: dict[str, object]) -> Answer:
    outputs = doc.get("outputs")
    assert isinstance(outputs, dict)
    when = datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")).timestamp()
    return answer(str(doc["id"]), when, str(doc["model"]), str(doc["version"]),
                  str(doc["route"]), {str(k): np.asarray(v) for k, v in outputs.items()})


def find_logged(roots: list[str], model: str, ids: set[str]) -> dict[str, list[Answer]]:
    """The logged answers (primary first, then shadows) of those `ids` found in the newest
    segments of `model` under each root."""
    found: dict[str, list[Answer]] = {}
    wanted = set(ids)
    for root in roots:
        for path in segment_files(root, model)[:MAX_SEGMENTS]:
            if not wanted:
                break
            try:
                with gzip.open(path, "rb") as f:
                    lines = f.read().splitlines()
            except (OSError, EOFError, zlib.error):
                continue  # unreadable: another segment may still hold the id
            for line in lines:
                # the id is read without parsing the line; only the wanted lines are parsed
                end = line.find(b'"', len(_PREFIX))
                if line.startswith(_PREFIX) and line[len(_PREFIX):end].decode(
                        "utf-8", "replace") not in wanted and b"\\" not in line[:end]:
                    continue
                try:
                    doc = orjson.loads(line)
                    rid = doc["id"]
                    if rid in wanted:
                        found.setdefault(rid, []).append(_answer(doc))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
            # an id is done once its primary's answer is in (its shadows' are logged after it:
            # in the same segment or a newer one, already read)
            wanted -= {rid for rid, got in found.items()
                       if any(a.route != "shadow" for a in got)}
    for entries in found.values():
        entries.sort(key=lambda c: c.route == "shadow")  # the primary's answer first
    return found
