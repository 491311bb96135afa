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
