"""Load keys: what makes a load new. Pinned to the previous release's values, so upgrading the engine never
turns files already loaded into new loads (which would duplicate their rows on the next append)."""

from __future__ import annotations

from engine.pipeline.runner import load_key, spec_hash
from engine.sources.base import Partition
from engine.spec.models import LoadSpec, SourceSpec
from engine.spec.parse import make_target, parse_pipeline
from tests.spec.test_models import ALL_KINDS


def test_spec_hash_and_load_key_are_those_of_the_previous_release() -> None:
    spec = LoadSpec(source=SourceSpec(path="/x/orders.csv", options={"delimiter": ";", "sheet": ["a", "b"]}),
                    target=make_target({"table": "orders", "connection_id": 7, "partition_by": "created_at:week",
                                        "mode": "merge", "key": ["id"]}),
                    pipeline=parse_pipeline(ALL_KINDS))
    digest = spec_hash(spec)
    assert digest == "38fe0575df282406"
    partition = Partition(key="/x/orders.csv", label="orders.csv", fingerprint="abc")
    assert load_key(spec.target, partition, digest) == \
        "df792e32b641055a247674b2b676f6b054db011b5f53fd210141cfe33ce13c09"
    documents = LoadSpec(source=SourceSpec(path="/x/o.json"), target=make_target({"table": "docs",
                                                                                  "layout": "document"}))
    assert spec_hash(documents) == "ff9a347045a43b25"
