"""`dynamodb://TABLE?region=R[&endpoint=URL][&create=1][&retries=N]`: checkpoints in one DynamoDB table.

Items are {k: key, v: bytes, x: expiry (epoch seconds, optional)}. A value over the 400 KB item limit
is split into parts written first, its head item last. put_many of a few small items (a checkpoint's
manifest and latest pointer) is one TransactWriteItems, so a commit becomes visible all at once.
The endpoint comes from `endpoint=`, else AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL, else AWS itself;
credentials from boto3's usual chain. Throttling is retried by botocore's standard retry mode.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore.config
import botocore.exceptions as bex

from broker.schemes import redact_url
from paramstore.base import Store
from paramstore.errors import StoreError, StoreUnavailable

PART_BYTES = 350 * 1024  # below the 400 KB item limit with room for the key and attributes
TRANSACT_ITEMS, TRANSACT_BYTES = 100, 3 * 1024 * 1024
_PART_SEP = "#"  # never in a valid key, so a part cannot collide with a key


class DynamoStore(Store):
    """A store in one DynamoDB table with a string partition key `k`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.table = parts.netloc
        if not self.table:
            raise StoreError(f"bad store URL {redact_url(url)!r}: name the table, dynamodb://TABLE?region=R")
        region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise StoreError(f"bad store URL {redact_url(url)!r}: no region (?region=R or AWS_REGION)")
        endpoint = (query.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
                    or os.environ.get("AWS_ENDPOINT_URL") or None)
        try:
            attempts = int(query.get("retries", 8))
        except ValueError:
            raise StoreError(f"bad store URL {redact_url(url)!r}: retries must be a number") from None
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": max(1, attempts)},
                                        connect_timeout=10, read_timeout=30)
        self._client = boto3.session.Session().client("dynamodb", region_name=region, endpoint_url=endpoint,
                                                      config=config)
        if query.get("create", "").lower() in ("1", "true", "yes"):
            self.create_table()
        else:
            self._call("DescribeTable", self._client.describe_table, TableName=self.table)

    # -- plumbing -----------------------------------------------------------------------------------
    def _call(self, what: str, fn, **kwargs):
        self._require_open()
        try:
            return fn(**kwargs)
        except bex.ClientError as exc:
            raise self._translate(what, exc) from None
        except (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError) as exc:
            raise StoreUnavailable(self.url, f"{type(exc).__name__}: {exc}") from None
        except bex.NoCredentialsError:
            raise StoreError("no AWS credentials found (environment, ~/.aws or an instance role)") from None
        except bex.BotoCoreError as exc:
            raise StoreUnavailable(self.url, f"{type(exc).__name__}: {exc}") from None

    def _translate(self, what: str, exc: bex.ClientError) -> StoreError:
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "?"), err.get("Message", "")
        if code == "ResourceNotFoundException":
            return StoreError(f"DynamoDB table {self.table!r} does not exist: create it, or add &create=1 "
                              "to the store URL")
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            return StoreError(f"DynamoDB refused {what} on {self.table!r} ({code}): check the credentials "
                              f"and the IAM policy: {message}")
        return StoreError(f"DynamoDB {what} on {self.table!r} failed: {code}: {message}")

    def create_table(self) -> None:
        """Create the table (on-demand billing) if it is missing, and wait until it is active."""
        try:
            self._client.create_table(
                TableName=self.table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
        except bex.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":  # in use: it exists
                raise self._translate("CreateTable", exc) from None
        except bex.BotoCoreError as exc:
            raise StoreUnavailable(self.url, f"{type(exc).__name__}: {exc}") from None
        self._call("DescribeTable", self._client.get_waiter("table_exists").wait, TableName=self.table,
                   WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    @staticmethod
    def _items(key: str, value: bytes, ttl: float | None) -> list[dict]:
        """The items that store `value` at `key`: its parts (if large) first, the head item last."""
        # fractional seconds: expiry is checked on every read (lazy native TTL would be far too coarse)
        expiry = {} if ttl is None else {"x": {"N": f"{time.time() + ttl:.3f}"}}
        if len(value) <= PART_BYTES:
            return [{"k": {"S": key}, "v": {"B": value}, **expiry}]
        pieces = [value[i:i + PART_BYTES] for i in range(0, len(value), PART_BYTES)]
        parts = [{"k": {"S": f"{key}{_PART_SEP}{i}"}, "v": {"B": p}} for i, p in enumerate(pieces)]
        return [*parts, {"k": {"S": key}, "n": {"N": str(len(pieces))}, **expiry}]

    def _assemble(self, item: dict | None) -> bytes | None:
        if item is None:
            return None
        if "x" in item and float(item["x"]["N"]) <= time.time():
            return None  # DynamoDB removes expired items lazily; they read as missing at once here
        if "n" not in item:
            return bytes(item["v"]["B"])
        key, count = item["k"]["S"], int(item["n"]["N"])
        pieces = self._fetch([f"{key}{_PART_SEP}{i}" for i in range(count)])
        parts = [p for p in pieces if p is not None]
        if len(parts) != len(pieces):
            raise StoreError(f"a part of the large value at {key!r} is missing")
        return b"".join(bytes(p["v"]["B"]) for p in parts)

    def _fetch(self, keys: list[str]) -> list[dict | None]:
        """Raw items of `keys` (BatchGetItem, 100 at a time, unprocessed keys retried)."""
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 100):
            request = {self.table: {"Keys": [{"k": {"S": k}} for k in dict.fromkeys(keys[i:i + 100])],
                                    "ConsistentRead": True}}
            delay = 0.05
            while request:
                answer = self._call("BatchGetItem", self._client.batch_get_item, RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[item["k"]["S"]] = item
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return [found.get(k) for k in keys]

    # -- the Store interface -----------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        """The bytes stored at `key`, or None if it is missing or expired."""
        answer = self._call("GetItem", self._client.get_item, TableName=self.table,
                            Key={"k": {"S": self.check_key(key)}}, ConsistentRead=True)
        return self._assemble(answer.get("Item"))

    def get_many(self, keys) -> list[bytes | None]:
        """The values of `keys`, fetched in batches."""
        keys = [self.check_key(k) for k in keys]
        return [self._assemble(item) for item in self._fetch(keys)]

    def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key` (parts first for large values), expiring after `ttl` seconds when given."""
        key, value, ttl = self.check_key(key), self.check_value(value), self.check_ttl(ttl)
        for item in self._items(key, value, ttl):
            self._call("PutItem", self._client.put_item, TableName=self.table, Item=item)

    def delete(self, key: str) -> None:
        """Remove `key` (and the parts of a large value); a missing key is fine."""
        answer = self._call("DeleteItem", self._client.delete_item, TableName=self.table,
                            Key={"k": {"S": self.check_key(key)}}, ReturnValues="ALL_OLD")
        old = answer.get("Attributes") or {}
        for i in range(int(old["n"]["N"]) if "n" in old else 0):
            self._call("DeleteItem", self._client.delete_item, TableName=self.table,
                       Key={"k": {"S": f"{key}{_PART_SEP}{i}"}})

    def keys(self, prefix: str) -> list[str]:
        """Sorted live keys starting with `prefix` (a filtered Scan of the table)."""
        prefix, now, found = self.check_prefix(prefix), time.time(), []
        kwargs = {"TableName": self.table, "ProjectionExpression": "k, x", "ConsistentRead": True}
        if prefix:
            kwargs.update(FilterExpression="begins_with(k, :p)", ExpressionAttributeValues={":p": {"S": prefix}})
        while True:
            answer = self._call("Scan", self._client.scan, **kwargs)
            for item in answer.get("Items", []):
                key = item["k"]["S"]
                if _PART_SEP not in key and not ("x" in item and float(item["x"]["N"]) <= now):
                    found.append(key)
            if "LastEvaluatedKey" not in answer:
                return sorted(found)
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store every item: one transaction when they fit in one (all or none), else key by key in order."""
        checked = {self.check_key(k): self.check_value(v) for k, v in items.items()}
        if not checked:
            return
        size = sum(len(k) + len(v) for k, v in checked.items())
        if len(checked) <= TRANSACT_ITEMS and size <= TRANSACT_BYTES and all(len(v) <= PART_BYTES for v in checked.values()):
            writes = [{"Put": {"TableName": self.table, "Item": self._items(k, v, None)[0]}} for k, v in checked.items()]
            self._call("TransactWriteItems", self._client.transact_write_items, TransactItems=writes)
            return
        for key, value in checked.items():
            self.put(key, value)

    def put_many_if(self, items: Mapping[str, bytes], expect: Mapping[str, bytes | None]) -> bool:
        """Store `items` if every key of `expect` holds its value (None: absent): one TransactWriteItems."""
        checked, wanted = self.check_guarded(items, expect)
        if len(checked) + len(wanted) > TRANSACT_ITEMS:
            raise ValueError(f"a guarded write has at most {TRANSACT_ITEMS} keys")

        def condition(key: str) -> dict:
            value = wanted[key]
            if value is None:  # an expired value counts as present: guarded keys never have a TTL
                return {"ConditionExpression": "attribute_not_exists(k)"}
            return {"ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": {"B": value}}}

        writes = [{"Put": {"TableName": self.table, "Item": self._items(k, v, None)[0],
                           **(condition(k) if k in wanted else {})}} for k, v in checked.items()]
        writes += [{"ConditionCheck": {"TableName": self.table, "Key": {"k": {"S": k}}, **condition(k)}}
                   for k in wanted if k not in checked]
        self._require_open()
        try:
            self._client.transact_write_items(TransactItems=writes)
        except bex.ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException" and any(
                    r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                return False
            raise self._translate("TransactWriteItems", exc) from None
        except (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError, bex.BotoCoreError) as exc:
            raise StoreUnavailable(self.url, f"{type(exc).__name__}: {exc}") from None
        return True

    def close(self) -> None:
        """Release the client; the store is unusable afterwards."""
        if not self._closed:
            self._closed = True
            self._client.close()
