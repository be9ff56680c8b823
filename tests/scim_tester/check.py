#!/usr/bin/env python3
"""Independent SCIM compliance check of ironclad-sim with scim2-tester.

Runs every scim2-tester check (``check_server``) against a running simulator through a
scim2-client sync client over httpx2, prints each result that is not a success, and exits:

- 0 when every failing check is in ALLOWED below (checks that fail because Ironclad documents
  different behaviour from RFC 7643/7644), and enough checks ran and passed;
- 1 otherwise (each unexpected failure is printed with its reason).

The allow-list is mirrored, with the reasons, in docs/simulator.md.

Usage: check.py --url http://127.0.0.1:PORT/scim/v2 --token TOKEN [--seed N]
The token needs every SCIM scope (a static ``--token`` of the simulator: no acting user).
"""

import argparse
import random
import sys
from dataclasses import dataclass
from typing import Any, Callable

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

IRONCLAD_EXT = "urn:ietf:params:scim:schemas:extension:ironclad:2.0:User"
PATCH_CHECKS = {"check_add_attribute", "check_replace_attribute", "check_remove_attribute"}
FAILED = {Status.ERROR, Status.CRITICAL}
# A run below this many successes means the checker did not really exercise the server.
MIN_SUCCESSES = 60


def urn_of(result: Any) -> str | None:
    data = result.data
    return data.get("urn") if isinstance(data, dict) else None


@dataclass
class Rule:
    """One documented reason for a check to fail against Ironclad's behaviour."""

    name: str
    reason: str
    matches: Callable[[Any], bool]


ALLOWED = [
    Rule(
        "active-false-removes-user",
        "Ironclad: setting active to false (PUT or PATCH) removes the user from the company; "
        "later reads answer 404. A PATCH add/replace of a random false 'active' therefore "
        "makes the read-back (and every later attribute of the same check, on the same user) "
        "answer 404.",
        lambda r: r.resource_type == "User"
        and r.title in {"check_add_attribute", "check_replace_attribute"}
        and urn_of(r) == "active"
        and "not found" in (r.reason or ""),
    ),
    Rule(
        "active-cannot-be-unassigned",
        "Ironclad users are always active (there is no inactive state), so removing 'active' "
        "leaves it true instead of unassigned.",
        lambda r: r.resource_type == "User"
        and r.title == "check_remove_attribute"
        and urn_of(r) == "active"
        and "did not remove" in (r.reason or ""),
    ),
    Rule(
        "ironclad-provider-read-only",
        "The Ironclad extension's 'provider' is read-only and always present, so the extension "
        "object can neither be removed as a whole nor compare equal to a value without it.",
        lambda r: r.resource_type == "User"
        and r.title in PATCH_CHECKS
        and urn_of(r) == IRONCLAD_EXT
        and any(
            s in (r.reason or "")
            for s in ("did not remove", "unexpected value", "was not removed")
        ),
    ),
]

CASCADE = Rule(
    "after-active-false",
    "Follows from active-false-removes-user: once the check's user is removed, the remaining "
    "attributes of that same check answer 404.",
    lambda r: "not found" in (r.reason or ""),
)


def classify(results: list[Any]) -> tuple[list[tuple[Any, str]], list[Any]]:
    """Splits failing results into (allowed with rule name, unexpected)."""
    allowed, unexpected = [], []
    removed_in: set[tuple[str | None, str | None]] = set()
    for r in results:
        if r.status not in FAILED:
            continue
        key = (r.title, r.resource_type)
        rule = next((rule for rule in ALLOWED if rule.matches(r)), None)
        if rule is None and key in removed_in and CASCADE.matches(r):
            rule = CASCADE
        if rule is None:
            unexpected.append(r)
            continue
        if rule.name == "active-false-removes-user":
            removed_in.add(key)
        allowed.append((r, rule.name))
    return allowed, unexpected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2")
    ap.add_argument("--token", required=True, help="bearer token with every SCIM scope")
    ap.add_argument("--seed", type=int, default=None, help="seed for scim2-tester's random values")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    random.seed(seed)
    print(f"scim2-tester against {args.url} (random seed {seed})")

    http = httpx2.Client(
        base_url=args.url, headers={"Authorization": f"Bearer {args.token}"}, timeout=30
    )
    results = check_server(SyncSCIMClient(http))

    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.name] = counts.get(r.status.name, 0) + 1
    print("results: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    allowed, unexpected = classify(results)
    for r in results:
        if r.status in FAILED or r.status == Status.SUCCESS:
            continue
        print(f"  {r.status.name}: {r.resource_type or '-'} {r.title}: {r.reason}")
    for r, rule in allowed:
        reason = (r.reason or "").replace("\n", " | ")[:200]
        print(f"  allowed ({rule}): {r.resource_type or '-'} {r.title}: {reason}")
    for r in unexpected:
        reason = (r.reason or "").replace("\n", " | ")
        print(f"  FAILED: {r.resource_type or '-'} {r.title}: {reason}")

    successes = counts.get(Status.SUCCESS.name, 0)
    if successes < MIN_SUCCESSES:
        print(f"only {successes} checks succeeded (expected at least {MIN_SUCCESSES})")
        return 1
    if unexpected:
        print(f"{len(unexpected)} check(s) failed outside the allow-list")
        return 1
    print(f"ok: {successes} checks passed, {len(allowed)} failure(s) allowed by Ironclad's documented behaviour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
