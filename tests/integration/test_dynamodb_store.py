"""What only the DynamoDB store does: values over the item limit, transactional commits, clear AWS errors."""
from __future__ import annotations

import os
import uuid

import pytest

pytestmark = pytest.mark.integration

from paramstore import StoreError, open_store
from paramstore.dynamodb import PART_BYTES


@pytest.fixture
def store(dynamodb_url):
    with open_store(dynamodb_url) as s:
        yield s


def test_values_over_the_item_limit_are_split_and_joined(store):
    key = f"big-{uuid.uuid4().hex}"
    value = os.urandom(2 * PART_BYTES + 123)
    store.put(key, value)
    assert store.get(key) == value and store.get_many([key]) == [value]
    assert store.keys(key) == [key]  # the parts are not keys
    store.put(key, b"small")  # overwritten by a small value
    assert store.get(key) == b"small"
    store.delete(key)
    assert store.get(key) is None


def test_checkpoint_commit_is_one_transaction(store, monkeypatch):
    calls = []
    real = store._client.transact_write_items
    monkeypatch.setattr(store._client, "transact_write_items", lambda **kw: calls.append(kw) or real(**kw))
    store.put_many({"t/manifest": b"{}", "t/latest": b"3"})
    assert len(calls) == 1 and len(calls[0]["TransactItems"]) == 2
    assert store.get("t/latest") == b"3"


def test_missing_table_names_the_fix(dynamodb_url):
    url = dynamodb_url.replace("cuttlefish-test", f"absent-{uuid.uuid4().hex[:6]}").replace("&create=1", "")
    with pytest.raises(StoreError, match="does not exist.*create=1"):
        open_store(url)


def test_unreachable_endpoint_and_missing_region():
    with pytest.raises(StoreError, match="region"):
        open_store("dynamodb://t")
    with pytest.raises(StoreError):
        open_store("dynamodb://t?region=us-east-1&endpoint=http://127.0.0.1:9&retries=1")
