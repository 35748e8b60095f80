"""Data: what the check-ins look like, and how they become client sequences."""

import streamlit as st

from fedlab.config import GROUPINGS, DataConfig
from fedlab.dashboard import presentation, settings, sources, state
from fedlab.data.categories import OTHER
from fedlab.results import charts

state.ensure_navigation()

st.title("Data")
sources.source_banner()

try:
    overview = sources.explore_data("overview")
except Exception as exc:
    state.show_error(exc)
    st.stop()

cols = st.columns(4)
for column, (label, key, help_text) in zip(
    cols,
    (
        ("check-ins", "rows", "Rows read from the data (after dropping bad or duplicate rows)."),
        ("users", "users", "Distinct people; each can become one federated client."),
        ("venues", "venues", "Distinct places."),
        ("categories", "categories", "Distinct Foursquare venue categories before grouping."),
    ),
):
    column.metric(label, f"{overview[key]:,}", help=help_text)
skipped = sources.skipped_rows()
st.caption(
    f"From {overview['first_time']:%d %b %Y} to {overview['last_time']:%d %b %Y} (UTC)."
    + (f" {skipped:,} rows were dropped (bad or duplicate rows)." if skipped else "")
)

defaults = DataConfig()
for key, value in (
    ("data_grouping", defaults.grouping),
    ("data_top_users", defaults.top_users),
    ("data_n", defaults.n),
):
    state.set_default(key, value)
if presentation.presenting():  # the choices stay as they were set, out of sight
    grouping, top_users, n = (st.session_state[k] for k in ("data_grouping", "data_top_users", "data_n"))
    st.caption(f"Grouping **{grouping}** · **{top_users}** users · N = **{n}**")
else:
    left, middle, right = st.columns(3)
    # Each widget's default is its current value, as in the settings form (fedlab/dashboard/settings.py).
    grouping = left.selectbox(
        "Category grouping",
        list(GROUPINGS),
        index=list(GROUPINGS).index(st.session_state["data_grouping"]),
        key="data_grouping",
        format_func=lambda g: f"{g} · {settings.GROUPING_NAMES[g]}",
        help="Which classes the model predicts; the charts below use the same grouping.",
    )
    top_users = middle.number_input(
        "Users (clients)",
        min_value=1,
        max_value=100_000,
        step=1,
        value=st.session_state["data_top_users"],
        key="data_top_users",
        help="The K most active users, each one federated client.",
    )
    n = right.number_input(
        "Sequence length N (check-ins)",
        min_value=2,
        max_value=500,
        step=1,
        value=st.session_state["data_n"],
        key="data_n",
        help="Check-ins per training sequence (N-1 inputs, N-1 next-category targets).",
    )

st.header("Who: check-ins per user")
per_user = sources.explore_data("checkins_per_user")
presentation.show_chart(charts.checkins_per_user_histogram(per_user), key="data_users")
st.caption(
    "How many users (y) have how many check-ins (x, log scale). A few very active users hold much of the "
    "data; with FedAvg they also weigh most in the average."
)

st.header("What: categories")
distribution = sources.explore_data("category_distribution", grouping)
presentation.show_chart(charts.category_bar(distribution), key="data_categories")
other = distribution.loc[distribution["group"] == OTHER, "checkins"].sum()
st.caption(
    f"Check-ins per category under the '{grouping}' grouping ({len(distribution)} classes). "
    "Predicting the biggest class every time is the 'majority' baseline."
    + (f" {other:,} check-ins have a category the grouping table lacks and count as 'Other'." if other else "")
)

st.header("When: hour and weekday")
presentation.show_chart(charts.hour_weekday_heatmap(sources.explore_data("hour_weekday_counts")), key="data_time")
st.caption(
    "Check-ins per local hour and weekday (UTC shifted by each check-in's own time-zone offset). "
    "Daily and weekly rhythms are why the cyclic time features help."
)

st.header("Where: map")
sample = sources.explore_data("map_sample", 5000, 0, grouping)
presentation.show_chart(charts.checkin_map(sample), key="data_map")
st.caption(
    f"{len(sample):,} check-ins drawn at random, coloured by category (the 10 most common; the rest grey). "
    "Plain longitude/latitude axes, so it works offline; zoom with the mouse."
)

st.header("Clients: how different are they? (non-IID)")
mix = sources.explore_data("client_category_mix", grouping, int(top_users), 40)
presentation.show_chart(charts.client_mix_heatmap(mix), key="data_mix")
st.caption(
    "Each row is one client (user); each cell the share of that client's check-ins in one category. "
    "If clients were IID (identically distributed) every row would look alike. Here they differ a lot: "
    "one goes to the gym, another to bars. That is what makes federated averaging hard."
)

st.header("Sequences for training")
try:
    summary = sources.sequence_summary(grouping, int(top_users), int(n))
except Exception as exc:
    state.show_error(exc)
else:
    cols = st.columns(4)
    cols[0].metric("clients", f"{summary['clients']:,}", help="Users kept as clients (the top K).")
    cols[1].metric("train sequences", f"{summary['train_sequences']:,}")
    cols[2].metric("validation sequences", f"{summary['val_sequences']:,}")
    cols[3].metric("test sequences", f"{summary['test_sequences']:,}")
    st.caption(
        f"Each client's check-ins are split in time order: the first 64% train, the next 16% validation, "
        f"the last 20% test (nothing from the future leaks into training). Each part is cut into "
        f"non-overlapping sequences of N = {n} check-ins; a short tail is dropped. "
        f"{summary['clients_with_train']:,} clients have at least one training sequence "
        f"(median {summary['median_train_per_client']:.0f} each)."
    )
