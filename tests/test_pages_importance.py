"""Which features matter, on the pages: both runs' importance side by side on Compare (the Train and Runs pages show
one run's through the same view), and who each feature helps in the fairness view; training faked (tests.fakes)."""

from fedlab.config import ALL_FEATURES, PRESETS
from tests.pages_support import app, assert_clean, chart_specs, db, store_run, texts, values  # noqa: F401

IMPORTANCE_TITLE = "Which features matter: acc@1 lost when one is shuffled"
HELPED_TITLE = "Who each feature helps: share of clients it helps"


def charts_by_title(at) -> dict:
    return {spec["layout"]["title"]["text"]: spec for spec in chart_specs(at)}


def test_compare_puts_both_runs_importance_on_one_feature_axis(db):
    store_run(db, "central old")
    store_run(db, "biggest old", features=ALL_FEATURES)
    at = app("compare")
    at.radio(key="cmp_mode").set_value("history").run()
    assert_clean(at)
    bars = charts_by_title(at)[IMPORTANCE_TITLE]["data"]
    assert {b["name"] for b in bars} == {"central old", "biggest old"}
    assert all(set(b["y"]) == set(ALL_FEATURES) for b in bars)  # one shared axis: every feature of either run
    assert {b["name"] for b in charts_by_title(at)[HELPED_TITLE]["data"]} == {"central old", "biggest old"}
    # The fake's k-th feature costs k hits per client and repeat (k + 1 in the second): the last costs the most.
    central = next(b for b in bars if b["name"] == "central old")
    drops = dict(zip(central["y"], values(central["x"])))
    assert (
        max(drops, key=drops.get) == PRESETS["central"][-1] and drops["venue_id"] != drops["venue_id"]
    )  # NaN: central has no venue_id
    assert f"*central old:* Shuffling **{PRESETS['central'][-1]}** costs the most" in texts(at)
