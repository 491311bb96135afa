"""Budgets, the pure part (aigw_translator.limits): which apply to a request, its counters, the
verdict, the charges and what the client is told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import orjson
import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator.budgets import Budgets
from aigw_translator.counters import MemoryCounters
from aigw_translator.endpoints import ClientSchema
from aigw_translator.limits import (
    Request,
    admission_charges,
    applicable,
    counter_key,
    decide,
    expression_costs,
    in_window,
    refusal_body,
    response_charges,
    source_ip,
    window_text,
)

H = config_pb2.HeaderCondition
HOUR = config_pb2.Window(seconds=3600)
NOW = 1_767_225_600.0 + 1800  # 2026-01-01 00:30 UTC: half an hour into an hour window


def header(name: str, match: int = H.DISTINCT, value: str = "", invert: bool = False) -> config_pb2.Condition:
    return config_pb2.Condition(header=H(name=name, match=match, value=value, invert=invert))


def budget(id_: str = "b", limit: int = 100, *conditions: config_pb2.Condition, **kw: object) -> config_pb2.RateLimit:
    return config_pb2.RateLimit(id=id_, source=f"test {id_}", limit=limit, window=HOUR, conditions=conditions, **kw)


def request(method: str = "POST", path: str = "/v1/chat/completions", source: str = "", **headers: str) -> Request:
    return Request({":method": method, ":path": path, **headers}, source)


class TestApplicable:
    def test_distinct_header_counts_each_value_separately_and_skips_requests_without_it(self) -> None:
        b = budget("tenant", 10, header("x-tenant-id"))
        a1 = applicable([b], request(**{"x-tenant-id": "a"}), "", NOW)
        a2 = applicable([b], request(**{"x-tenant-id": "a"}), "", NOW)
        other = applicable([b], request(**{"x-tenant-id": "b"}), "", NOW)
        assert len(a1) == 1 and a1[0].key == a2[0].key != other[0].key
        assert applicable([b], request(), "", NOW) == []

    def test_counter_key_hides_the_header_value_and_names_budget_and_window(self) -> None:
        (c,) = applicable([budget("tenant", 10, header("x-tenant-id"))], request(**{"x-tenant-id": "secret"}), "", NOW)
        assert "secret" not in c.key
        assert c.key.startswith("aigw:rl:tenant:") and c.key.endswith(":1767225600")
        assert c.reset_at == 1_767_225_600 + 3600

    def test_exact_regex_and_inverted_headers(self) -> None:
        exact = budget("e", 1, header("x-plan", H.EXACT, "free"))
        regex = budget("r", 1, header("x-plan", H.REGULAR_EXPRESSION, "fr.*"))
        not_free = budget("n", 1, header("x-plan", H.EXACT, "free", invert=True))
        free = request(**{"x-plan": "free"})
        assert [c.budget.id for c in applicable([exact, regex, not_free], free, "", NOW)] == ["e", "r"]
        paid = request(**{"x-plan": "paid"})
        assert [c.budget.id for c in applicable([exact, regex, not_free], paid, "", NOW)] == ["n"]
        # a regular expression matches the whole value, as Envoy's safe_regex does
        assert applicable([regex], request(**{"x-plan": "not-free"}), "", NOW) == []

    def test_source_cidr_and_distinct_addresses(self) -> None:
        inside = config_pb2.Condition(source=config_pb2.SourceCondition(cidr="10.0.0.0/8", distinct=True))
        b = budget("src", 5, inside)
        one = applicable([b], request(source="10.1.2.3"), "", NOW)
        two = applicable([b], request(source="10.1.2.4"), "", NOW)
        assert one[0].key != two[0].key
        assert applicable([b], request(source="192.168.0.1"), "", NOW) == []
        assert applicable([b], request(source=""), "", NOW) == []

    def test_methods_and_paths(self) -> None:
        post = config_pb2.Condition(method=config_pb2.MethodCondition(methods=["POST"]))
        chat = config_pb2.Condition(
            path=config_pb2.PathCondition(match=config_pb2.PathCondition.PATH_PREFIX, value="/v1/chat")
        )
        b = budget("m", 5, post, chat)
        assert applicable([b], request(), "", NOW)
        assert applicable([b], request(method="GET"), "", NOW) == []
        assert applicable([b], request(path="/v1/chatter"), "", NOW) == []  # a prefix is whole segments
        assert applicable([b], request(path="/v1/chat/completions?x=1"), "", NOW)

    def test_a_trailing_slash_does_not_step_around_a_path_condition(self) -> None:
        """The translator serves /v1/chat/completions/ as /v1/chat/completions: the conditions see it so."""
        exact = config_pb2.PathCondition(match=config_pb2.PathCondition.EXACT, value="/v1/chat/completions")
        regex = config_pb2.PathCondition(match=config_pb2.PathCondition.REGULAR_EXPRESSION, value="/v1/chat/.*s")
        for cond in (exact, regex):
            b = budget("p", 5, config_pb2.Condition(path=cond))
            for path in ("/v1/chat/completions", "/v1/chat/completions/", "/v1/chat/completions//?stream=1"):
                assert applicable([b], request(path=path), "", NOW), (cond.match, path)
            assert applicable([b], request(path="/v1/chat/completionsx"), "", NOW) == []
        not_models = config_pb2.PathCondition(match=config_pb2.PathCondition.EXACT, value="/v1/models", invert=True)
        inverted = budget("i", 5, config_pb2.Condition(path=not_models))
        assert applicable([inverted], request(path="/v1/models/"), "", NOW) == []
        assert applicable([inverted], request(), "", NOW)
        root = budget("r", 5, config_pb2.Condition(path=config_pb2.PathCondition(match=exact.match, value="/")))
        assert applicable([root], request(path="/"), "", NOW) and applicable([root], request(path="//"), "", NOW)

    def test_a_quota_for_a_model_applies_only_to_that_model(self) -> None:
        b = budget("q", 5, model="gpt-4o")
        assert applicable([b], request(), "gpt-4o", NOW)
        assert applicable([b], request(), "gpt-4o-mini", NOW) == []

    def test_buckets_of_a_group_are_exclusive_first_match_wins_default_last(self) -> None:
        vip = budget("vip", 1000, header("x-plan", H.EXACT, "vip"), bucket_group="g")
        tenant = budget("tenant", 100, header("x-tenant-id"), bucket_group="g")
        default = budget("default", 10, bucket_group="g")
        group = [vip, tenant, default]
        assert [c.budget.id for c in applicable(group, request(**{"x-plan": "vip", "x-tenant-id": "a"}), "", NOW)] == [
            "vip"
        ]
        assert [c.budget.id for c in applicable(group, request(**{"x-tenant-id": "a"}), "", NOW)] == ["tenant"]
        assert [c.budget.id for c in applicable(group, request(), "", NOW)] == ["default"]

    def test_a_default_with_unless_counts_only_what_the_budgets_it_names_do_not(self) -> None:
        per_user = budget("user", 5, header("x-user"), local=True)
        gets = budget("gets", 7, config_pb2.Condition(method=config_pb2.MethodCondition(methods=["GET"])), local=True)
        default = budget("default", 100, local=True, unless=["user", "gets"])
        rules = [per_user, default, gets]  # the default's place in the list does not matter
        assert [c.budget.id for c in applicable(rules, request(), "", NOW)] == ["default"]
        assert [c.budget.id for c in applicable(rules, request(**{"x-user": "a"}), "", NOW)] == ["user"]
        both = applicable(rules, request("GET", **{"x-user": "a"}), "", NOW)
        assert [c.budget.id for c in both] == ["user", "gets"]  # every matching rule counts, not the default

    def test_query_parameters_select_as_headers_do_by_their_first_decoded_value(self) -> None:
        def query(name: str, match: int = H.DISTINCT, value: str = "", invert: bool = False) -> config_pb2.Condition:
            return config_pb2.Condition(query=H(name=name, match=match, value=value, invert=invert))

        per_team = budget("team", 5, query("team"))

        def key(path: str) -> str:
            [counted] = applicable([per_team], request(path=path), "", NOW)
            return counted.key

        # As Envoy decodes them: %XX only (a `+` stays a `+`), the first value, bytes not UTF-8 apart.
        assert key("/v1/chat/completions?team=a%20b&team=c") == key("/v1/chat/completions?x=1&team=a%20b")
        assert key("/v1/chat/completions?team=a+b") != key("/v1/chat/completions?team=a%20b")
        assert key("/v1/chat/completions?team=c") != key("/v1/chat/completions?team=a%20b")
        assert key("/v1/x?team=%FF") != key("/v1/x?team=%FE")
        assert key("/v1/x?team") == key("/v1/x?team=")
        plus = budget("plus", 5, query("team", H.EXACT, "a+b"))
        assert applicable([plus], request(path="/v1/x?team=a+b"), "", NOW)
        assert applicable([plus], request(path="/v1/x?team=a%2Bb"), "", NOW)
        assert applicable([plus], request(path="/v1/x?team=a%20b"), "", NOW) == []
        pattern = budget("re", 5, query("team", H.REGULAR_EXPRESSION, "a.*"))
        assert applicable([pattern], request(path="/v1/x?team=%FF"), "", NOW) == []  # not UTF-8: no match
        assert applicable([per_team], request(path="/v1/chat/completions"), "", NOW) == []
        assert applicable([per_team], request(path="/v1/chat/completions", **{"team": "a"}), "", NOW) == []
        beta = budget("beta", 5, query("Mode", H.EXACT, "beta"))  # names are case-sensitive, as written
        assert applicable([beta], request(path="/v1/x?Mode=beta"), "", NOW)
        assert applicable([beta], request(path="/v1/x?mode=beta"), "", NOW) == []
        not_beta = budget("nb", 5, query("Mode", H.REGULAR_EXPRESSION, "be.*", invert=True))
        assert applicable([not_beta], request(path="/v1/x?Mode=gamma"), "", NOW)
        assert applicable([not_beta], request(path="/v1/x?Mode=beta"), "", NOW) == []

    def test_an_inverted_source_range_selects_the_clients_outside_it(self) -> None:
        outside = budget(
            "o", 5, config_pb2.Condition(source=config_pb2.SourceCondition(cidr="10.0.0.0/8", invert=True))
        )
        assert applicable([outside], request(source="192.0.2.1"), "", NOW)
        assert applicable([outside], request(source="10.1.2.3"), "", NOW) == []

    def test_a_local_budget_counter_key_says_it_is_local(self) -> None:
        (c,) = applicable([budget("l", 5, local=True)], request(), "", NOW)
        assert c.key.startswith("aigw:rl-local:l:")


def test_source_ip_strips_the_port() -> None:
    assert source_ip("10.0.0.7:51234") == "10.0.0.7"
    assert source_ip("[::1]:51234") == "::1"
    assert source_ip("10.0.0.7") == "10.0.0.7"


def test_counter_key_without_distinct_values() -> None:
    assert counter_key(budget("x"), [], 60) == "aigw:rl:x:60"


def test_a_response_is_charged_to_the_window_it_ends_in() -> None:
    """A stream admitted 2 s before the minute turns and ending after it: its charge goes to the new
    window's counter (the admission window's counter has expired: a charge there would be lost)."""
    minute = config_pb2.Window(seconds=60)
    admitted_at = 1_767_225_600.0 - 2
    tpm = budget("t", 100, header("x-tenant-id"))
    tpm.window.CopyFrom(minute)
    (c,) = applicable([tpm], request(**{"x-tenant-id": "a"}), "", admitted_at)
    assert c.key.endswith(":1767225540") and c.reset_at == 1_767_225_600
    (later,) = in_window([c], admitted_at + 5)
    assert later.key == c.key.removesuffix(":1767225540") + ":1767225600"
    assert later.reset_at == 1_767_225_660 and later.budget is c.budget
    assert in_window([c], admitted_at) == [c]


class TestDecide:
    def test_a_token_budget_admits_until_the_counter_reaches_the_limit(self) -> None:
        (c,) = applicable([budget("t", 100)], request(), "", NOW)
        assert decide([c], [99], False, NOW).admitted
        refused = decide([c], [100], False, NOW)
        assert not refused.admitted and refused.exceeded is c
        assert refused.headers["retry-after"] == "1800" == refused.headers["x-ratelimit-reset"]
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-limit"] == "100, 100;w=3600"
        assert refused.headers["x-should-retry"] == "false"  # half an hour: the SDKs should not retry

    def test_a_request_cost_must_fit(self) -> None:
        (c,) = applicable([budget("r", 10, request_cost=1)], request(), "", NOW)
        assert decide([c], [9], False, NOW).admitted
        assert not decide([c], [10], False, NOW).admitted
        assert admission_charges([c]) == {c.key: (1, c.reset_at)}

    def test_headers_name_the_budget_closest_to_its_limit(self) -> None:
        wide, tight = applicable([budget("w", 1000), budget("t", 100)], request(), "", NOW)
        verdict = decide([wide, tight], [10, 90], False, NOW)
        assert verdict.admitted
        assert verdict.headers == {
            "x-ratelimit-limit": "100, 100;w=3600",
            "x-ratelimit-remaining": "10",
            "x-ratelimit-reset": "1800",
        }

    def test_a_calendar_window_is_given_whole_in_the_limit_header(self) -> None:
        """w is the window's length (February 2026: 28 days), x-ratelimit-reset what is left of it."""
        month = budget("m", 100)
        month.window.CopyFrom(config_pb2.Window(months=1))
        feb_27 = 1_769_904_000.0 + 26 * 86400  # 2026-02-27 00:00 UTC
        (c,) = applicable([month], request(), "", feb_27)
        headers = decide([c], [99], False, feb_27).headers
        assert headers["x-ratelimit-limit"] == f"100, 100;w={28 * 86400}"
        assert headers["x-ratelimit-reset"] == str(2 * 86400)

    def test_shadow_budgets_never_refuse_but_are_reported(self) -> None:
        (c,) = applicable([budget("s", 10, shadow=True)], request(), "", NOW)
        verdict = decide([c], [50], False, NOW)
        assert verdict.admitted and verdict.shadow_exceeded == (c,)
        assert "x-ratelimit-limit" not in verdict.headers

    def test_store_down_fails_open_or_closed(self) -> None:
        (c,) = applicable([budget("t", 10)], request(), "", NOW)
        assert decide([c], None, False, NOW).admitted
        closed = decide([c], None, True, NOW)
        assert not closed.admitted and closed.store_down and closed.exceeded is None

    def test_shadow_budgets_never_refuse_even_failing_closed(self) -> None:
        (shadow,) = applicable([budget("s", 10, shadow=True)], request(), "", NOW)
        verdict = decide([shadow], None, True, NOW)
        assert verdict.admitted and verdict.store_down
        (enforced,) = applicable([budget("e", 10)], request(), "", NOW)
        assert not decide([shadow, enforced], None, True, NOW).admitted

    def test_no_budget_admits(self) -> None:
        assert decide([], None, True, NOW).admitted


def test_response_charges_take_the_named_cost_or_the_expression() -> None:
    named, expr = applicable(
        [budget("n", 100, response_cost_key="llm_total_token"), budget("e", 100, response_cost_cel="input_tokens * 2")],
        request(),
        "",
        NOW,
    )
    (cel,) = expression_costs([named, expr])
    assert cel.type == config_pb2.LLMRequestCost.CEL and cel.cel == "input_tokens * 2"
    charges = response_charges([named, expr], {"llm_total_token": 42, cel.metadata_key: 7.9})
    assert charges == {named.key: (42, named.reset_at), expr.key: (7, expr.reset_at)}
    assert response_charges([named], {"llm_total_token": -3}) == {}
    assert response_charges([named], {}) == {}


@pytest.mark.parametrize(
    ("schema", "check"),
    [
        (ClientSchema.OPENAI, lambda b: b["error"]["type"] and b["error"]["code"] == "rate_limit_exceeded"),
        (ClientSchema.ANTHROPIC, lambda b: b["type"] == "error" and b["error"]["type"] == "rate_limit_error"),
    ],
)
def test_refusal_is_a_429_in_the_client_schema(schema: ClientSchema, check) -> None:  # type: ignore[no-untyped-def]
    (c,) = applicable([budget("t", 10)], request(), "", NOW)
    status, body = refusal_body(schema, decide([c], [10], False, NOW))
    assert status == 429
    parsed = orjson.loads(body)
    assert check(parsed)
    assert "it resets in 1800s (30m)" in orjson.dumps(parsed).decode()


def test_refusal_while_the_store_is_down_is_a_503() -> None:
    (c,) = applicable([budget("t", 10)], request(), "", NOW)
    status, body = refusal_body(ClientSchema.OPENAI, decide([c], None, True, NOW))
    assert status == 503 and b"unavailable" in body


class TestBudgets:
    """Budgets.admit against the in-memory counters (the Redis store answers the same: test_counters),
    at the real time (the memory store drops charges whose window is over)."""

    async def test_concurrent_requests_cannot_all_slip_under_a_request_limit(self) -> None:
        budgets = Budgets(MemoryCounters())
        (c,) = applicable([budget("r", 5, request_cost=1)], request(), "", time.time())
        verdicts = await asyncio.gather(*(budgets.admit([c], time.time()) for _ in range(20)))
        assert sum(v.admitted for v in verdicts) == 5

    async def test_a_token_budget_is_read_and_charged_when_the_response_ends(self) -> None:
        budgets = Budgets(MemoryCounters())
        (c,) = applicable([budget("t", 100, response_cost_key="llm_total_token")], request(), "", time.time())
        assert (await budgets.admit([c], time.time())).admitted
        budgets.charge(response_charges([c], {"llm_total_token": 100}))
        await budgets.drain()
        refused = await budgets.admit([c], time.time())
        assert not refused.admitted and refused.exceeded is c

    async def test_store_down_fails_open_by_default_and_closed_when_asked(self) -> None:
        class Down(MemoryCounters):
            async def read(self, keys):  # type: ignore[no-untyped-def]
                return None

        (c,) = applicable([budget("t", 100)], request(), "", time.time())
        assert (await Budgets(Down()).admit([c], time.time())).admitted
        closed = await Budgets(Down(), fail_closed=True).admit([c], time.time())
        assert not closed.admitted and closed.store_down

    async def test_local_budgets_are_counted_apart_from_the_shared_store_and_outlive_its_outage(self) -> None:
        """A request under a global and a local budget while the shared store (Redis) is down: the
        local one is still judged, from this process's memory; the global one fails open (or
        closed). The shared store never sees a local counter."""
        seen: list[str] = []

        class Shared(MemoryCounters):
            down = False

            async def read(self, keys: Sequence[str]) -> list[int] | None:
                seen.extend(keys)
                return None if self.down else await super().read(keys)

            async def add(self, charges):  # type: ignore[no-untyped-def]
                seen.extend(charges)
                return None if self.down else await super().add(charges)

        shared = Shared()
        rules = [budget("g", 1000, request_cost=1), budget("l", 2, request_cost=1, local=True)]
        counted = applicable(rules, request(), "", time.time())
        budgets = Budgets(shared)
        assert (await budgets.admit(counted, time.time())).admitted
        shared.down = True
        admitted = [(await budgets.admit(counted, time.time())).admitted for _ in range(3)]
        assert admitted == [True, False, False]
        refused = await Budgets(shared, fail_closed=True).admit(counted, time.time())
        assert not refused.admitted and refused.store_down
        assert seen and not any(k.startswith("aigw:rl-local") for k in seen)
        budgets.charge({c.key: (1, c.reset_at) for c in counted})  # a response's charges go each to its own
        await budgets.drain()
        assert await budgets.local.read([counted[1].key]) == [3]

    async def test_a_request_a_local_budget_refuses_charges_no_other_local_budget(self) -> None:
        """As Envoy's local rate limiter: a user at its limit does not spend its tenant's budget; a
        request the shared budgets refuse has its local charges taken back."""
        budgets = Budgets(MemoryCounters())
        user = budget("user", 2, header("x-user"), request_cost=1, local=True)
        tenant = budget("tenant", 5, header("x-tenant"), request_cost=1, local=True)
        now = time.time()
        for _ in range(6):
            await budgets.admit(
                applicable([user, tenant], request(**{"x-user": "u1", "x-tenant": "acme"}), "", now), now
            )
        other = applicable([user, tenant], request(**{"x-user": "u2", "x-tenant": "acme"}), "", now)
        assert (await budgets.admit(other, now)).admitted  # the tenant has 2 of its 5 spent
        spent = budget("g", 1, request_cost=1)
        both = applicable([spent, user], request(**{"x-user": "u3"}), "", now)
        assert (await budgets.admit(both, now)).admitted
        assert not (await budgets.admit(both, now)).admitted  # the global one refuses...
        assert await budgets.local.read([both[1].key]) == [1]  # ...and u3's local charge is taken back

    async def test_pending_local_charges_refuse_no_one_the_shared_budgets_then_refuse(self) -> None:
        """A user's local room held by requests a slow shared budget will refuse is not spent: a
        request the local budget would refuse only because of those waits, then passes."""
        release = asyncio.Event()

        class Slow(MemoryCounters):
            async def read(self, keys: Sequence[str]) -> list[int] | None:
                await release.wait()
                return await super().read(keys)

            async def add(self, charges):  # type: ignore[no-untyped-def]
                await release.wait()
                return await super().add(charges)

        budgets = Budgets(Slow())
        now = time.time()
        user = budget("user", 1, request_cost=1, local=True)
        spent = budget("spent", 0, request_cost=1)  # refuses every request
        room = budget("room", 100, request_cost=1)
        refused = asyncio.ensure_future(budgets.admit(applicable([user, spent], request(), "", now), now))
        await asyncio.sleep(0)
        admitted = asyncio.ensure_future(budgets.admit(applicable([user, room], request(), "", now), now))
        await asyncio.sleep(0.05)
        assert not admitted.done()  # waiting for the first request's local charge to settle
        release.set()
        assert not (await refused).admitted and (await admitted).admitted
        [local_key] = [c.key for c in applicable([user], request(), "", now)]
        assert await budgets.local.read([local_key]) == [1]

    async def test_a_rule_with_its_headers_off_adds_no_x_ratelimit_headers(self) -> None:
        budgets = Budgets(MemoryCounters())
        now = time.time()
        quiet = applicable([budget("q", 1, request_cost=1, headers_off=True)], request(), "", now)
        assert (await budgets.admit(quiet, now)).headers == {}
        refused = await budgets.admit(quiet, now)
        assert not refused.admitted and set(refused.headers) <= {"retry-after", "x-should-retry"}
        assert "retry-after" in refused.headers


class TestFirstOpen:
    """Budgets.first_open: which priority the router phase sends a request to (QuotaPolicy failover)."""

    class Counting(MemoryCounters):
        def __init__(self) -> None:
            super().__init__()
            self.reads: list[list[str]] = []

        async def read(self, keys: Sequence[str]) -> list[int] | None:
            self.reads.append(list(keys))
            return await super().read(keys)

    async def test_skips_the_spent_priorities_and_stops_reading_at_an_open_one(self) -> None:
        now = time.time()
        counters = self.Counting()
        budgets = Budgets(counters)
        spent, room, shadow = (
            applicable([budget(i, 10, **kw)], request(), "", now)
            for i, kw in (("spent", {}), ("room", {}), ("shadow", {"shadow": True}))
        )
        await counters.add({spent[0].key: (10, int(now) + 3600), shadow[0].key: (10, int(now) + 3600)})
        # one spent backend and one with room in a priority: not skipped
        assert await budgets.first_open([[spent, room], [room]], now) == 0
        assert await budgets.first_open([[spent], [spent], [room]], now) == 2
        # every priority spent: the first (its attempt answers the 429)
        assert await budgets.first_open([[spent], [spent]], now) == 0
        # a spent shadow budget never skips
        assert await budgets.first_open([[shadow], [room]], now) == 0
        counters.reads.clear()
        # a backend under no applicable budget is open: nothing read when it is in the first priority,
        # nothing below it read otherwise
        assert await budgets.first_open([[spent, []], [room]], now) == 0
        assert counters.reads == []
        assert await budgets.first_open([[spent], [[]], [room]], now) == 1
        assert counters.reads == [[spent[0].key]]


def test_a_refusal_that_resets_within_a_minute_leaves_retrying_to_the_sdk() -> None:
    minute = config_pb2.RateLimit(id="m", limit=1, window=config_pb2.Window(seconds=60), request_cost=1)
    (c,) = applicable([minute], request(), "", NOW)
    refused = decide([c], [1], False, NOW)
    assert not refused.admitted and int(refused.headers["retry-after"]) <= 60
    assert "x-should-retry" not in refused.headers


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (config_pb2.Window(seconds=3600), "hour"),
        (config_pb2.Window(seconds=7200), "2 hours"),
        (config_pb2.Window(seconds=604800), "week"),
        (config_pb2.Window(seconds=90), "90 seconds"),
        (config_pb2.Window(months=1), "month"),
        (config_pb2.Window(months=12), "12 months"),
    ],
)
def test_the_refusal_names_the_window(window: config_pb2.Window, text: str) -> None:
    assert window_text(window) == text


def test_a_long_reset_is_said_in_days_and_hours_too() -> None:
    (c,) = applicable([budget("w", 10)], request(), "", NOW)
    verdict = decide([c], [10], False, NOW)
    for seconds, said in ((549_492, "549492s (6d 8h)"), (3600, "3600s (1h)"), (59, "59s"), (7260, "7260s (2h 1m)")):
        _, body = refusal_body(ClientSchema.OPENAI, replace(verdict, headers={"retry-after": str(seconds)}))
        assert f"it resets in {said}" in orjson.loads(body)["error"]["message"]
