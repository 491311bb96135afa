import random

from aigw_xds.runs import mark, runs


def test_runs_hold_every_item_in_order_and_end_where_marks_say():
    names = [f"default/r{i}" for i in range(500)]
    cut = runs(names, map(mark, names), 8)
    assert [n for run in cut for n in run] == names
    assert all(mark(run[-1]) % 8 == 0 for run in cut[:-1])
    assert all(mark(n) % 8 for run in cut for n in run[:-1])
    assert runs([], [], 8) == []


def test_an_insertion_or_removal_changes_only_the_run_it_falls_in():
    rng = random.Random(7)
    names = sorted(f"default/r{i}" for i in range(400))
    before = set(runs(names, map(mark, names), 8))
    for _ in range(20):
        edited = list(names)
        if rng.random() < 0.5:
            del edited[rng.randrange(len(edited))]
        else:
            edited.insert(rng.randrange(len(edited)), f"default/new{rng.randrange(10**6)}")
        after = runs(edited, map(mark, edited), 8)
        assert len([run for run in after if run not in before]) <= 2  # the one it falls in (or two it joins)


def test_what_the_build_keeps_on_a_rule_costs_it_no_dictionary_of_its_own(tmp_path):
    """The build hashes every rule (hash_once) and reads its backends' names: kept as items put in
    the rule's __dict__, they made each rule a dictionary of its own, 700 bytes (7 MB at 10,000
    routes). Measured with tracemalloc (no timing)."""
    from aigw_xds.compile import compile_resources
    from aigw_xds.sources.files import FileSource
    from tests.allocations import held
    from tests.resource_text import api_key, backend, gateway, route

    text = gateway() + backend("b", 9000) + api_key("b", "k")
    text += "".join(route(f"r{i}", {f"m{i}": [("b", 0, 1), ("b", 1, 1)]}) for i in range(300))
    (tmp_path / "c.yaml").write_text(text)
    result = compile_resources(FileSource(tmp_path).load())
    rules = [rule for run in result.gateways["default/gw"].rule_runs for rule in run]
    assert len(rules) == 300

    def touch() -> None:  # what the build does to each rule; nothing of it is kept here
        for rule in rules:
            hash(rule)
            _ = rule.backend_names

    _, kept = held(touch)
    assert kept / len(rules) < 200, kept / len(rules)  # the hash's int; a dictionary of its own is 600+
