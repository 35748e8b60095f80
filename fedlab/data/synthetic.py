"""A seeded synthetic New York: the app's default check-in data and the tests' main fixture.

``generate_city`` returns the canonical check-in frame of ``fedlab.data.loader`` for a made-up city
with the habits a next-category model can learn:

- 18 neighbourhoods at real New York coordinates (Manhattan, Brooklyn, Queens, the Bronx), each
  with its own coffee shops, delis, bars, restaurants, gyms, parks, stations and offices, plus
  landmarks (Penn Station, Grand Central, JFK, LaGuardia, Yankee Stadium, the Met, ...).
- Users of three kinds: office workers (about 62%), students at real colleges (20%) and
  irregular users (18%: shifted hours, venues all over town). Each has a home, a workplace or
  college, a commute by subway, train or bus, and a few favourite places of each kind (their
  coffee shop, lunch spots, bar, gym, park...) that they keep going back to.
- Weekdays: home, commute, coffee, work, lunch, work, commute back, then gym, dinner, a bar or a
  show; Thursday and Friday nights go out more. Weekends: late mornings, brunch, parks (more in
  summer), shopping, museums, church on Sunday for some, games at stadiums in season, bars.
- Each user checks in only a share of what they do: a per-user target between 30 and 600
  check-ins for 365 days (scaled for other lengths; median about 110), in bursts of 3 to 8 on
  the days they check in, mostly at the kinds of place they like to check in at, and with weekly
  routines (gym on the same weekdays...). Heavy and light users differ widely.
- 32 categories, all real names from the NYC TSMC2014 data (``CATEGORIES``), with a stable
  24-hex id derived from each name; venue ids are random 24-hex strings; user ids "1".."users".
- Times start on 2012-04-03 (local), are stored as UTC with the New York offset (-240 in
  daylight-saving time, else -300), rows sorted by time. Same seed, same frame.

``write_raw`` writes a frame in the raw TSMC2014 format, so that ``load_checkins`` reads it back.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedlab.data.loader import COLUMNS, format_utc

SYNTHETIC_LABEL = "Synthetic city (generated)"
START_DATE = np.datetime64("2012-04-03", "D")
MIN_CHECKINS, MAX_CHECKINS = 30, 600  # per user over a 365-day city; scaled with `days`

# The category names, exactly as in column 4 of the real NYC file.
CATEGORIES = (
    "Home (private)",
    "Office",
    "College Academic Building",
    "Subway",
    "Train Station",
    "Bus Station",
    "Airport",
    "Coffee Shop",
    "Café",
    "Deli / Bodega",
    "Bakery",
    "Sandwich Place",
    "Food & Drink Shop",
    "Bar",
    "Gym / Fitness Center",
    "Park",
    "American Restaurant",
    "Mexican Restaurant",
    "Pizza Place",
    "Italian Restaurant",
    "Chinese Restaurant",
    "Drugstore / Pharmacy",
    "Bank",
    "Church",
    "Medical Center",
    "Clothing Store",
    "Department Store",
    "Movie Theater",
    "Music Venue",
    "Hotel",
    "Museum",
    "Stadium",
)
_CAT = {name: index for index, name in enumerate(CATEGORIES)}

# name, latitude, longitude, weight as a home, weight as a workplace
_HOODS = (
    ("Midtown", 40.7549, -73.9840, 1.0, 10.0),
    ("Financial District", 40.7075, -74.0113, 0.5, 6.0),
    ("Chelsea", 40.7420, -73.9950, 2.0, 4.0),
    ("Greenwich Village", 40.7336, -74.0027, 2.0, 2.0),
    ("Lower East Side", 40.7150, -73.9843, 3.0, 1.0),
    ("Upper West Side", 40.7870, -73.9754, 4.0, 1.0),
    ("Upper East Side", 40.7736, -73.9566, 4.0, 1.5),
    ("Harlem", 40.8116, -73.9465, 3.0, 0.5),
    ("Williamsburg", 40.7081, -73.9571, 4.0, 1.0),
    ("Park Slope", 40.6710, -73.9814, 3.0, 0.5),
    ("Downtown Brooklyn", 40.6928, -73.9903, 2.0, 2.0),
    ("Bushwick", 40.6944, -73.9213, 3.0, 0.3),
    ("Astoria", 40.7644, -73.9235, 3.0, 0.5),
    ("Long Island City", 40.7447, -73.9485, 1.5, 1.5),
    ("Flushing", 40.7675, -73.8331, 2.5, 0.7),
    ("Jamaica", 40.7027, -73.7890, 2.5, 0.7),
    ("Fordham", 40.8615, -73.8904, 2.5, 0.5),
    ("Flatbush", 40.6409, -73.9624, 2.5, 0.3),
)
_HOOD_LAT = np.array([h[1] for h in _HOODS])
_HOOD_LON = np.array([h[2] for h in _HOODS])
_HOOD_LAT.flags.writeable = _HOOD_LON.flags.writeable = False  # constants
_SHOPPING_HOODS = (0, 2, 10, 14)  # Midtown, Chelsea, Downtown Brooklyn, Flushing
_BOX = ((40.55, 40.90), (-74.05, -73.70))  # where every coordinate lies

# Venues in every neighbourhood: category -> count (Office also grows with the work weight).
_LOCAL_VENUES = {
    "Coffee Shop": 4,
    "Café": 2,
    "Deli / Bodega": 4,
    "Bakery": 1,
    "Sandwich Place": 2,
    "Food & Drink Shop": 2,
    "Bar": 5,
    "Gym / Fitness Center": 2,
    "Park": 2,
    "American Restaurant": 2,
    "Mexican Restaurant": 2,
    "Pizza Place": 2,
    "Italian Restaurant": 2,
    "Chinese Restaurant": 2,
    "Drugstore / Pharmacy": 2,
    "Bank": 2,
    "Church": 2,
    "Medical Center": 1,
    "Clothing Store": 1,
    "Department Store": 1,
    "Movie Theater": 1,
    "Music Venue": 1,
    "Hotel": 1,
    "Office": 2,
    "Subway": 3,
    "Bus Station": 2,
}
# Public landmarks: category, latitude, longitude.
_LANDMARKS = (
    ("Train Station", 40.7506, -73.9935),
    ("Train Station", 40.7527, -73.9772),  # Penn, Grand Central
    ("Train Station", 40.6996, -73.8086),
    ("Train Station", 40.6843, -73.9776),  # Jamaica, Atlantic Terminal
    ("Train Station", 40.7575, -73.8303),
    ("Train Station", 40.8612, -73.8906),  # Flushing, Fordham
    ("Bus Station", 40.7570, -73.9903),  # Port Authority
    ("Airport", 40.6413, -73.7781),
    ("Airport", 40.7769, -73.8740),  # JFK, LaGuardia
    ("Stadium", 40.8296, -73.9262),
    ("Stadium", 40.7571, -73.8458),  # Yankee Stadium, Citi Field
    ("Stadium", 40.7505, -73.9934),
    ("Stadium", 40.6826, -73.9754),  # Madison Square Garden, Barclays
    ("Museum", 40.7794, -73.9632),
    ("Museum", 40.7614, -73.9776),
    ("Museum", 40.7813, -73.9740),
    ("Museum", 40.6712, -73.9636),
    ("Museum", 40.7830, -73.9590),
    ("Museum", 40.7563, -73.9239),
    ("Hotel", 40.7580, -73.9855),
    ("Hotel", 40.7614, -73.9800),
    ("Hotel", 40.6650, -73.8010),
)
# Colleges (three buildings each): NYU, Columbia, Baruch, Brooklyn College, Queens College, Fordham.
_COLLEGES = (
    (40.7295, -73.9965),
    (40.8075, -73.9626),
    (40.7402, -73.9834),
    (40.6311, -73.9524),
    (40.7366, -73.8170),
    (40.8612, -73.8855),
)

WORKER, STUDENT, IRREGULAR = 0, 1, 2
_KIND_SHARES = (0.62, 0.20, 0.18)

# Favourite kinds: categories pooled, where the favourites lie ("home", "work", "shops", "any"),
# how many each user has.
_FAVOURITES = {
    "coffee": (("Coffee Shop", "Café", "Bakery", "Deli / Bodega"), "work", 3),
    "lunch": (
        (
            "Deli / Bodega",
            "Sandwich Place",
            "Pizza Place",
            "Chinese Restaurant",
            "Mexican Restaurant",
            "American Restaurant",
            "Food & Drink Shop",
        ),
        "work",
        4,
    ),
    "dinner": (
        ("Italian Restaurant", "Mexican Restaurant", "Chinese Restaurant", "American Restaurant", "Pizza Place"),
        "home",
        4,
    ),
    "brunch": (("Café", "Bakery", "American Restaurant", "Coffee Shop"), "home", 3),
    "bar": (("Bar",), "mixed", 3),
    "gym": (("Gym / Fitness Center",), "mixed", 1),
    "park": (("Park",), "home", 2),
    "grocery": (("Food & Drink Shop", "Deli / Bodega"), "home", 2),
    "errand": (("Drugstore / Pharmacy", "Bank"), "home", 2),
    "shop": (("Clothing Store", "Department Store"), "shops", 3),
    "church": (("Church",), "home", 1),
    "medical": (("Medical Center",), "home", 1),
    "show": (("Movie Theater", "Music Venue"), "any", 3),
    "museum": (("Museum",), "any", 3),
    "stadium": (("Stadium",), "any", 2),
    "airport": (("Airport",), "any", 2),
    "hotel": (("Hotel",), "any", 2),
    "work": (("Office",), "work", 1),
    "college": (("College Academic Building",), "college", 2),
}
_COMMUTE_MODES = ("Subway", "Train Station", "Bus Station")
_COMMUTE_SHARES = (0.5, 0.3, 0.2)  # train only where the neighbourhood has a station, else subway
_PER_DAY = (3.0, 8.0)  # range of a user's check-ins per active day (check-ins come in bursts)
_TASTE_SPREAD = 2.0  # log-sd of a user's liking for checking in at each kind of slot
_ROUTINE = (0.3, 2.5, 0.15)  # share of weekdays in a user's routine for a slot; chance there; elsewhere
_LOYALTY = 0.9  # chance that a favourite is of the user's preferred category for its kind
_PREFERENCE = (0.55, 0.25, 0.12, 0.08)  # how often the 1st, 2nd... favourite is chosen


@dataclass(frozen=True)
class _Slot:
    """Something a user may do on a day: where, when (hours after their day starts), how likely."""

    name: str
    place: str  # a favourite kind, or "home"
    days: str  # "weekday", "weekend", "sunday", "any"
    start: float  # hours after the user's day start (8:00 for a typical worker)
    spread: float  # standard deviation, hours
    chance: tuple[float, float, float]  # per user kind: worker, student, irregular
    habit: str = ""  # a per-user habit that scales the chance (see _users)
    nights: bool = False  # more likely on Thursday to Saturday
    season: bool = False  # more likely from May to September


_SLOTS = (
    _Slot("leave home", "home", "weekday", -0.3, 0.2, (0.2, 0.2, 0.15)),
    _Slot("station out", "home_station", "weekday", 0.1, 0.1, (0.35, 0.3, 0.2), habit="commute"),
    _Slot("station in", "work_station", "weekday", 0.7, 0.15, (0.25, 0.2, 0.15), habit="commute"),
    _Slot("coffee", "coffee", "weekday", 0.95, 0.15, (0.6, 0.65, 0.35), habit="coffee"),
    _Slot("arrive", "work", "weekday", 1.2, 0.2, (0.45, 0.0, 0.35)),
    _Slot("class", "college", "weekday", 1.5, 0.8, (0.0, 0.5, 0.0)),
    _Slot("lunch", "lunch", "weekday", 4.5, 0.45, (0.55, 0.55, 0.35)),
    _Slot("afternoon", "work", "weekday", 6.5, 1.0, (0.15, 0.0, 0.12)),
    _Slot("afternoon class", "college", "weekday", 6.0, 1.0, (0.0, 0.25, 0.0)),
    _Slot("errand", "errand", "any", 5.5, 2.5, (0.08, 0.06, 0.08)),
    _Slot("station back", "work_station", "weekday", 9.6, 0.5, (0.25, 0.2, 0.15), habit="commute"),
    _Slot("station home", "home_station", "weekday", 10.3, 0.5, (0.2, 0.2, 0.15), habit="commute"),
    _Slot("gym", "gym", "any", 11.0, 0.8, (0.7, 0.6, 0.5), habit="gym"),
    _Slot("groceries", "grocery", "any", 11.3, 1.0, (0.15, 0.12, 0.15)),
    _Slot("dinner out", "dinner", "any", 11.7, 0.8, (0.2, 0.18, 0.2), nights=True),
    _Slot("show", "show", "any", 12.5, 0.8, (0.06, 0.08, 0.06), nights=True),
    _Slot("drinks", "bar", "any", 13.5, 1.3, (0.45, 0.6, 0.45), habit="bar", nights=True),
    _Slot("home at night", "home", "any", 15.0, 0.8, (0.25, 0.25, 0.25)),
    _Slot("weekend morning", "home", "weekend", 2.5, 1.0, (0.3, 0.3, 0.2)),
    _Slot("brunch", "brunch", "weekend", 3.8, 0.8, (0.35, 0.35, 0.25)),
    _Slot("church", "church", "sunday", 2.0, 0.4, (0.7, 0.5, 0.5), habit="church"),
    _Slot("park", "park", "weekend", 6.0, 1.8, (0.35, 0.35, 0.25), season=True),
    _Slot("shopping", "shop", "weekend", 7.0, 1.8, (0.25, 0.25, 0.2)),
    _Slot("museum", "museum", "weekend", 6.5, 1.2, (0.08, 0.1, 0.1)),
    _Slot("game", "stadium", "any", 11.2, 0.5, (0.03, 0.03, 0.03), season=True),
    _Slot("subway out", "home_station", "weekend", 5.0, 1.5, (0.2, 0.25, 0.15), habit="commute"),
    _Slot("doctor", "medical", "weekday", 3.0, 2.0, (0.015, 0.01, 0.02)),
    _Slot("trip", "airport", "any", 4.0, 4.0, (0.012, 0.01, 0.02)),
    _Slot("hotel", "hotel", "any", 12.0, 3.0, (0.004, 0.004, 0.05)),
)


@dataclass(frozen=True)
class _Venues:
    category: np.ndarray  # index into CATEGORIES
    lat: np.ndarray
    lon: np.ndarray
    hood: np.ndarray  # nearest neighbourhood


@dataclass(frozen=True)
class _Users:
    kind: np.ndarray  # WORKER, STUDENT or IRREGULAR
    home: np.ndarray  # home neighbourhood
    work: np.ndarray  # workplace or college neighbourhood
    day_start: np.ndarray  # hour the day starts (leaving home on a weekday)
    home_lat: np.ndarray  # each user's home (a venue of its own)
    home_lon: np.ndarray
    habits: dict[str, np.ndarray]  # habit -> 0..1 multiplier of a slot's chance
    target: np.ndarray  # check-ins to keep


# ---------------------------------------------------------------------------------------------
# Public API


def generate_city(*, users: int = 300, days: int = 365, seed: int = 0) -> pd.DataFrame:
    """The synthetic city's check-ins as the canonical frame (see module docstring)."""
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ValueError(f"users must be a whole number of at least 1, not {users!r}")
    if isinstance(days, bool) or not isinstance(days, int) or days < 7:
        raise ValueError(f"days must be a whole number of at least 7, not {days!r}")
    rng = np.random.default_rng(seed)
    venues = _make_venues(rng)
    people = _make_users(rng, users, days)
    favourites = _choose_favourites(rng, venues, people)
    user, local, venue, weight = _simulate(rng, people, favourites, days)
    keep = _pick_checkins(rng, user, weight, people.target)
    return _to_frame(rng, venues, people, user[keep], local[keep], venue[keep])


def write_raw(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a canonical frame as a raw TSMC2014 file: tab-separated, no header, Latin-1.

    Floats are written in full (shortest round-trip form) and times to the second.
    Raises ValueError if a text value holds a tab or newline or is not Latin-1.
    """
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks column(s) {', '.join(missing)}")
    out = frame[list(COLUMNS)].copy()
    for column in COLUMNS[:4]:
        text = out[column].astype(str)
        if text.str.contains(r"[\t\n\r]", regex=True).any():
            raise ValueError(f"column {column!r} holds a tab or line break, which the raw format cannot store")
        out[column] = text
    out["utc_time"] = format_utc(out["utc_time"].to_numpy())
    try:
        body = out.to_csv(sep="\t", header=False, index=False, lineterminator="\n", quoting=3)
        encoded = body.encode("latin-1")
    except UnicodeEncodeError as error:
        raise ValueError(f"a value cannot be written in Latin-1: {error.object[error.start : error.end]!r}") from None
    with open(path, "wb") as handle:
        handle.write(encoded)


def category_id(name: str) -> str:
    """A stable 24-hex id for a category name (the same in every city and every run)."""
    return hashlib.sha1(f"fedlab category {name}".encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# The city: venues and users


def _make_venues(rng: np.random.Generator) -> _Venues:
    """Neighbourhood venues, landmarks and college buildings (homes are added per user later)."""
    parts = [_neighbourhood_venues(rng)]
    landmarks = np.array([(_CAT[c], lat, lon) for c, lat, lon in _LANDMARKS])
    parts.append((landmarks[:, 0].astype(int), landmarks[:, 1], landmarks[:, 2]))
    centres = np.repeat(np.array(_COLLEGES), 3, axis=0)
    parts.append(
        (
            np.full(len(centres), _CAT["College Academic Building"]),
            centres[:, 0] + rng.normal(0, 0.0015, len(centres)),
            centres[:, 1] + rng.normal(0, 0.0015, len(centres)),
        )
    )
    category, lat, lon = (np.concatenate(values) for values in zip(*parts))
    return _Venues(category=category, lat=lat, lon=lon, hood=_nearest_hood(lat, lon))


def _neighbourhood_venues(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.array(
        [
            [count + (round(hood[4]) if name == "Office" else 0) for name, count in _LOCAL_VENUES.items()]
            for hood in _HOODS
        ]
    )  # (hoods, categories)
    per_hood = counts.sum(axis=1)
    hood = np.repeat(np.arange(len(_HOODS)), per_hood)
    category = np.concatenate([np.repeat([_CAT[name] for name in _LOCAL_VENUES], row) for row in counts])
    lat = _HOOD_LAT[hood] + rng.normal(0, 0.006, len(hood))
    lon = _HOOD_LON[hood] + rng.normal(0, 0.008, len(hood))
    return category, lat, lon


def _nearest_hood(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    distance = (lat[:, None] - _HOOD_LAT) ** 2 + ((lon[:, None] - _HOOD_LON) * 0.76) ** 2  # cos(40.7°)
    return distance.argmin(axis=1)


def _make_users(rng: np.random.Generator, n: int, days: int) -> _Users:
    kind = rng.choice(3, size=n, p=_KIND_SHARES)
    home = rng.choice(len(_HOODS), size=n, p=_weights(3))
    work = rng.choice(len(_HOODS), size=n, p=_weights(4))
    college_hoods = _nearest_hood(np.array(_COLLEGES)[:, 0], np.array(_COLLEGES)[:, 1])
    work = np.select(
        [kind == STUDENT, kind == IRREGULAR], [rng.choice(college_hoods, size=n), rng.integers(0, len(_HOODS), n)], work
    )
    day_start = np.select(
        [kind == WORKER, kind == STUDENT], [rng.normal(8.0, 0.6, n), rng.normal(9.0, 0.9, n)], rng.uniform(6.0, 16.0, n)
    )
    habits = {
        "commute": rng.beta(5, 2, n),
        "coffee": rng.beta(2, 2, n),
        "gym": np.where(rng.random(n) < 0.45, rng.beta(2, 2, n), 0.0),
        "bar": rng.beta(1.5, 2.5, n),
        "church": np.where(rng.random(n) < 0.15, rng.beta(4, 2, n), 0.0),
    }
    scale = days / 365
    target = np.exp(rng.normal(np.log(110), 0.85, n)) * scale
    low, high = max(2, int(np.ceil(MIN_CHECKINS * scale))), max(2, int(MAX_CHECKINS * scale))
    home_lat = _HOOD_LAT[home] + np.clip(rng.normal(0, 0.007, n), -0.02, 0.02)
    home_lon = _HOOD_LON[home] + np.clip(rng.normal(0, 0.009, n), -0.025, 0.025)
    return _Users(
        kind=kind,
        home=home,
        work=work,
        day_start=day_start,
        habits=habits,
        home_lat=home_lat,
        home_lon=home_lon,
        target=np.clip(np.round(target), low, high).astype(np.int64),
    )


def _weights(column: int) -> np.ndarray:
    weights = np.array([hood[column] for hood in _HOODS])
    return weights / weights.sum()


def _choose_favourites(rng: np.random.Generator, venues: _Venues, users: _Users) -> dict[str, np.ndarray]:
    """kind -> (users, count) venue indices: each user's own few places of that kind."""
    n = len(users.kind)
    favourites = {}
    for kind, (names, where, count) in _FAVOURITES.items():
        anchor = _anchor_hoods(rng, users, where, (n, count))
        favourites[kind] = _loyal_favourites(rng, venues, names, anchor)
    # Irregular users go all over town: their everyday favourites come from random neighbourhoods.
    irregular = users.kind == IRREGULAR
    for kind in ("coffee", "lunch", "dinner", "bar"):
        names, _, count = _FAVOURITES[kind]
        pool = np.flatnonzero(np.isin(venues.category, [_CAT[name] for name in names]))
        anywhere = pool[rng.integers(0, len(pool), (n, count))]
        favourites[kind] = np.where(irregular[:, None], anywhere, favourites[kind])
    mode = rng.choice(len(_COMMUTE_MODES), size=n, p=_COMMUTE_SHARES)  # one way of commuting per user
    for kind, hood in (("home_station", users.home), ("work_station", users.work)):
        favourites[kind] = _stations(rng, venues, hood, mode)
    return favourites


def _loyal_favourites(
    rng: np.random.Generator, venues: _Venues, names: tuple[str, ...], anchor: np.ndarray
) -> np.ndarray:
    """Favourites near the anchors, mostly of one preferred category per user (a pizza person...)."""
    by_category = np.stack(
        [
            _venue_in_hood(rng, pool, venues.hood[pool], anchor)
            for pool in (np.flatnonzero(venues.category == _CAT[name]) for name in names)
        ],
        axis=-1,
    )
    preferred = rng.integers(0, len(names), anchor.shape[0])[:, None]
    other = rng.integers(0, len(names), anchor.shape)
    chosen = np.where(rng.random(anchor.shape) < _LOYALTY, preferred, other)
    return np.take_along_axis(by_category, chosen[..., None], axis=-1)[..., 0]


def _anchor_hoods(rng: np.random.Generator, users: _Users, where: str, shape: tuple[int, int]) -> np.ndarray:
    if where == "home":
        return np.repeat(users.home[:, None], shape[1], axis=1)
    if where in ("work", "college"):
        return np.repeat(users.work[:, None], shape[1], axis=1)
    if where == "mixed":
        return np.where(rng.random(shape) < 0.5, users.home[:, None], users.work[:, None])
    if where == "shops":
        return np.where(rng.random(shape) < 0.7, rng.choice(_SHOPPING_HOODS, size=shape), users.home[:, None])
    return np.full(shape, -1)  # anywhere in town


def _venue_in_hood(rng: np.random.Generator, pool: np.ndarray, pool_hood: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """A random venue of the pool in each anchor neighbourhood (anywhere when there is none there, or -1)."""
    order = np.argsort(pool_hood, kind="stable")
    pool, pool_hood = pool[order], pool_hood[order]
    first = np.searchsorted(pool_hood, np.arange(len(_HOODS)))
    count = np.searchsorted(pool_hood, np.arange(len(_HOODS)), side="right") - first
    hood = np.maximum(anchor, 0)
    local = (anchor >= 0) & (count[hood] > 0)
    draw = rng.random(anchor.shape)
    near = first[hood] + (draw * np.maximum(count[hood], 1)).astype(np.int64)
    anywhere = (draw * len(pool)).astype(np.int64)
    return pool[np.where(local, near, anywhere)]


def _stations(rng: np.random.Generator, venues: _Venues, hood: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """(users, 1): the station of each user's commute mode in a neighbourhood (subway if it has none)."""
    choices = []
    for category in _COMMUTE_MODES:
        pool = np.flatnonzero(venues.category == _CAT[category])
        station = _venue_in_hood(rng, pool, venues.hood[pool], hood[:, None])[:, 0]
        choices.append(station)
    available = np.stack([venues.hood[station] == hood for station in choices], axis=1)
    mode = np.where(available[np.arange(len(hood)), mode], mode, 0)
    return np.choose(mode, choices)[:, None]


# ---------------------------------------------------------------------------------------------
# Days: what everyone does, then which of it they check in


def _simulate(
    rng: np.random.Generator, users: _Users, favourites: dict[str, np.ndarray], days: int
) -> tuple[np.ndarray, ...]:
    """Every candidate check-in: user, local time (hours since START_DATE 00:00), venue, weight."""
    n = len(users.kind)
    weekday = (np.arange(days) + _weekday(START_DATE)) % 7  # Monday = 0
    month = (START_DATE + np.arange(days)).astype("datetime64[M]").astype(np.int64) % 12 + 1
    summer = ((month >= 5) & (month <= 9)).astype(float)
    active = _active_days(rng, users.target, days)
    taste = np.exp(rng.normal(0, _TASTE_SPREAD, (n, len(_SLOTS))))  # places a user likes to check in at
    taste[users.kind == IRREGULAR] **= 1.5
    share, inside, outside = _ROUTINE
    routine = np.where(rng.random((n, len(_SLOTS), 7)) < share, inside, outside)  # e.g. gym on Mon and Thu
    outputs = []
    for index, slot in enumerate(_SLOTS):
        chance = np.array(slot.chance)[users.kind]
        if slot.habit:
            chance = chance * users.habits[slot.habit]
        on_day = _slot_days(slot, weekday, summer)
        happens = rng.random((n, days)) < chance[:, None] * on_day[None, :] * routine[:, index, weekday]
        user, day = np.nonzero(happens)
        hours = users.day_start[user] + slot.start + rng.normal(0, slot.spread, len(user))
        # A home is the user's own venue, coded -1 - user until the frame is built.
        place = -1 - user if slot.place == "home" else _pick_favourite(rng, favourites[slot.place], user)
        weight = taste[user, index] * active[user, day]
        outputs.append((user, day * 24.0 + hours, place, weight))
    user, local, venue, weight = (np.concatenate(values) for values in zip(*outputs))
    return user, local, venue, weight


def _active_days(rng: np.random.Generator, target: np.ndarray, days: int) -> np.ndarray:
    """(users, days) weights: 1 on the days a user checks in, tiny elsewhere (used only if short)."""
    per_day = rng.uniform(*_PER_DAY, len(target))
    chance = np.minimum(1.0, target / per_day / days)
    return np.where(rng.random((len(target), days)) < chance[:, None], 1.0, 1e-6)


def _weekday(day: np.datetime64) -> int:
    return int((day.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday


def _slot_days(slot: _Slot, weekday: np.ndarray, summer: np.ndarray) -> np.ndarray:
    """How likely the slot is on each day, relative to its base chance."""
    allowed = {
        "weekday": weekday < 5,
        "weekend": weekday >= 5,
        "sunday": weekday == 6,
        "any": np.ones_like(weekday, dtype=bool),
    }[slot.days].astype(float)
    if slot.nights:
        allowed *= np.select([weekday == 3, weekday == 4, weekday == 5], [1.6, 2.2, 2.0], 0.8)
    if slot.season:
        allowed *= 0.35 + 1.3 * summer
    return allowed


def _pick_favourite(rng: np.random.Generator, table: np.ndarray, user: np.ndarray) -> np.ndarray:
    count = table.shape[1]
    shares = np.array(_PREFERENCE[:count])
    preference = np.cumsum(shares / shares.sum())
    column = np.minimum(np.searchsorted(preference, rng.random(len(user))), count - 1)
    return table[user, column]


def _pick_checkins(rng: np.random.Generator, user: np.ndarray, weight: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Indices of each user's `target` check-ins, drawn without replacement in proportion to weight."""
    # Weighted sampling by keys u^(1/w) (Efraimidis-Spirakis): keep each user's largest keys.
    key = np.log(rng.random(len(user))) / weight  # in (-inf, 0]; larger is kept first
    order = np.lexsort((-key, user))
    starts = np.searchsorted(user[order], np.arange(len(target)))
    rank = np.arange(len(order)) - starts[user[order]]
    return np.sort(order[rank < target[user[order]]])


# ---------------------------------------------------------------------------------------------
# The frame


def _to_frame(
    rng: np.random.Generator, venues: _Venues, users: _Users, user: np.ndarray, local: np.ndarray, venue: np.ndarray
) -> pd.DataFrame:
    n_users, n_venues = len(users.kind), len(venues.category)
    is_home = venue < 0
    owner = np.where(is_home, -1 - venue, 0)
    shared = np.where(is_home, 0, venue)
    venue_index = np.where(is_home, n_venues + owner, venue)  # homes are numbered after the venues
    category = np.where(is_home, _CAT["Home (private)"], venues.category[shared])
    lat = np.clip(np.where(is_home, users.home_lat[owner], venues.lat[shared]), *_BOX[0])
    lon = np.clip(np.where(is_home, users.home_lon[owner], venues.lon[shared]), *_BOX[1])

    local_time = START_DATE.astype("datetime64[s]") + np.round(local * 3600).astype(np.int64)
    offset = _new_york_offset(local_time)
    utc = (local_time - offset.astype("timedelta64[m]")).astype("datetime64[ns]")
    venue_ids = _hex_ids(rng, n_venues + n_users)
    names = np.array(CATEGORIES, dtype=object)
    ids = np.array([category_id(name) for name in CATEGORIES], dtype=object)
    user_ids = np.array([str(i + 1) for i in range(n_users)], dtype=object)
    frame = pd.DataFrame(
        {
            "user": user_ids[user],
            "venue": venue_ids[venue_index],
            "category_id": ids[category],
            "category": names[category],
            "latitude": np.round(lat, 6),
            "longitude": np.round(lon, 6),
            "tz_offset": offset.astype(np.int64),
            "utc_time": utc,
        },
        columns=list(COLUMNS),
    )
    frame = frame.iloc[np.lexsort((user, utc))]  # by time, like the real file
    frame = frame[~frame.duplicated()]  # the loader drops exact duplicates; keep round trips exact
    return frame.reset_index(drop=True)


def _new_york_offset(local: np.ndarray) -> np.ndarray:
    """UTC offset in minutes of New York local times: -240 in daylight-saving time, else -300."""
    year = local.astype("datetime64[Y]")
    march, november = year + np.timedelta64(2, "M"), year + np.timedelta64(10, "M")
    # DST runs from the second Sunday of March, 2:00, to the first Sunday of November, 2:00.
    start = _nth_sunday(march.astype("datetime64[D]"), 2) + np.timedelta64(2, "h")
    end = _nth_sunday(november.astype("datetime64[D]"), 1) + np.timedelta64(2, "h")
    return np.where((local >= start) & (local < end), -240, -300)


def _nth_sunday(first_of_month: np.ndarray, n: int) -> np.ndarray:
    weekday = (first_of_month.astype(np.int64) + 3) % 7
    return first_of_month + ((6 - weekday) % 7 + 7 * (n - 1)).astype("timedelta64[D]")


def _hex_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random 24-hex venue ids (Foursquare-like), deterministic per seed."""
    digits = rng.bytes(12 * count).hex()
    return np.array([digits[24 * i : 24 * i + 24] for i in range(count)], dtype=object)
