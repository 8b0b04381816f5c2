"""The durable request log: round trip, idempotent append, the read queries, and refusal of bad records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from recsys.requestlog import (
    InvalidRequestRecord,
    PolicyRef,
    RequestLog,
    RequestRecord,
    ShownOffer,
    SqlRequestLog,
    TripSnapshot,
)

T0 = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
BEIJING = timezone(timedelta(hours=8))


def rec(i: int, member: str = "M1", **over: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": f"req-{i:04d}",
        "member_id": member,
        "request_time": T0 + timedelta(minutes=i),
        "placement": "booking",
        "trip": TripSnapshot(
            flight_number="CA4101",
            origin="PEK",
            destination="CTU",
            cabin="Y",
            fare_class="B",
            departure_time=datetime(2026, 11, 27, 8, 30, tzinfo=BEIJING),
            booking_lead_days=5,
            party_size=3,
            children=1,
            stay_nights=4,
        ),
        "candidates": ("A", "B", "C", "D"),
        "shown": (ShownOffer("C", 0, 0.9625), ShownOffer("A", 1, 0.025)),
        "policy": PolicyRef("loyalty-offers", "3"),
        "exploration": i % 2 == 1,
        "experiment": "exp-1" if i % 3 == 0 else None,
        "variant": "control" if i % 3 == 0 else None,
    }
    values.update(over)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_the_sql_log_is_a_request_log(request_log: SqlRequestLog) -> None:
    assert isinstance(request_log, RequestLog)


def test_round_trip_keeps_every_field(request_log: SqlRequestLog) -> None:
    r = rec(0)
    assert request_log.append([r]) == 1
    got = request_log.get("req-0000")
    assert got == r  # context, trip (departure in UTC, same instant), candidates, slate, policy, experiment
    assert got is not None and got.trip.departure_time == datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    assert got.shown[0] == ShownOffer("C", 0, 0.9625)
    assert request_log.get("nope") is None


def test_home_request_without_trip_and_empty_slate(request_log: SqlRequestLog) -> None:
    r = rec(1, trip=TripSnapshot(), candidates=(), shown=())
    request_log.append([r])
    assert request_log.get(r.request_id) == r


def test_append_is_idempotent_on_request_id(request_log: SqlRequestLog) -> None:
    assert request_log.append([rec(0), rec(1), rec(0)]) == 2
    assert request_log.append([rec(1), rec(2)]) == 1
    assert request_log.count() == 3
    # A retried record keeps its first version (and its shown rows are not duplicated).
    assert request_log.append([rec(2, shown=(ShownOffer("B", 0, 1.0),))]) == 0
    got = request_log.get("req-0002")
    assert got is not None and [s.offer_id for s in got.shown] == ["C", "A"]


def test_read_queries_by_member_time_and_experiment(request_log: SqlRequestLog) -> None:
    records = [rec(i, member="M1" if i % 2 else "M2") for i in range(12)]
    request_log.append(records[::-1])  # stored out of order: reads come back in time order
    m1 = request_log.for_member("M1")
    assert [r.request_id for r in m1] == [f"req-{i:04d}" for i in range(1, 12, 2)]
    window = request_log.for_member("M1", since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=9))
    assert [r.request_id for r in window] == ["req-0003", "req-0005", "req-0007"]
    # The same instants given in Beijing time select the same records.
    since_bj = (T0 + timedelta(minutes=3)).astimezone(BEIJING)
    until_bj = (T0 + timedelta(minutes=9)).astimezone(BEIJING)
    assert request_log.for_member("M1", since=since_bj, until=until_bj) == window
    got = list(request_log.between(T0 + timedelta(minutes=2), T0 + timedelta(minutes=10), batch_size=3))
    assert [r.request_id for r in got] == [f"req-{i:04d}" for i in range(2, 10)]
    assert got == records[2:10]
    exp = list(request_log.between(T0, T0 + timedelta(days=1), experiment="exp-1"))
    assert [r.request_id for r in exp] == ["req-0000", "req-0003", "req-0006", "req-0009"]
    assert request_log.count(experiment="exp-1") == 4
    assert request_log.count(member_id="M2") == 6
    many = request_log.get_many(["req-0004", "req-0007", "missing"])
    assert set(many) == {"req-0004", "req-0007"} and many["req-0004"] == records[4]


@pytest.mark.parametrize(
    ("shown", "field", "words"),
    [
        ((ShownOffer("C", 0, 0.0),), "propensities", "propensity 0.0"),
        ((ShownOffer("C", 0, 1.5),), "propensities", "propensity 1.5"),
        ((ShownOffer("C", 0, -0.1),), "propensities", "must be in (0, 1]"),
        ((ShownOffer("C", 0, float("nan")),), "propensities", "has no propensity"),
        ((ShownOffer("C", 0, None),), "propensities", "has no propensity"),  # type: ignore[arg-type]
        ((ShownOffer("Z", 0, 0.5),), "shown", "not in the candidate set"),
        ((ShownOffer("C", 0, 0.5), ShownOffer("C", 1, 0.5)), "shown", "repeats an offer"),
        ((ShownOffer("C", 1, 0.5),), "shown.slot", "slots must be 0..0"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(
    request_log: SqlRequestLog, shown: tuple[ShownOffer, ...], field: str, words: str
) -> None:
    good, bad = rec(0), rec(1, shown=shown)
    with pytest.raises(InvalidRequestRecord) as err:
        request_log.append([good, bad])
    assert err.value.field == field
    assert err.value.request_id == "req-0001"
    assert words in str(err.value) and "req-0001" in str(err.value)
    assert request_log.count() == 0  # the whole batch is refused, the good record too


BOOKED = TripSnapshot(origin="PEK", destination="CTU")


@pytest.mark.parametrize(
    ("trip", "field", "words"),
    [
        (replace(BOOKED, booking_lead_days=-1), "trip.booking_lead_days", "must be an integer 0..366"),
        (replace(BOOKED, party_size=0), "trip.party_size", "got 0"),
        (replace(BOOKED, party_size=12), "trip.party_size", "must be an integer 1..9"),
        (replace(BOOKED, stay_nights=1.5), "trip.stay_nights", "got 1.5"),
        (replace(BOOKED, party_size=2, children=3), "trip.children", "3 children on a booking of 2"),
    ],
)
def test_bad_booking_fields_are_refused(
    request_log: SqlRequestLog, trip: TripSnapshot, field: str, words: str
) -> None:
    with pytest.raises(InvalidRequestRecord) as err:
        request_log.append([rec(0), rec(1, trip=trip)])
    assert err.value.field == field and words in str(err.value)
    assert request_log.count() == 0


def test_naive_request_time_is_refused(request_log: SqlRequestLog) -> None:
    with pytest.raises(InvalidRequestRecord, match="request_time: must be timezone-aware"):
        request_log.append([rec(0, request_time=datetime(2026, 11, 22, 9, 30))])


def test_unsupported_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="must be sqlite or postgresql, got 'mysql'"):
        SqlRequestLog("mysql://u@h/db", create=False)


def test_records_survive_reopening(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    log = SqlRequestLog(url)
    log.append([rec(0), rec(1)])
    log.close()
    again = SqlRequestLog(url)
    assert again.get_many(["req-0000", "req-0001"]) == {"req-0000": rec(0), "req-0001": rec(1)}
    assert replace(rec(0)) == again.get("req-0000")
    again.close()


def test_exposures_of_an_experiment(request_log: SqlRequestLog) -> None:
    records = [rec(i, member=f"M{i % 4}") for i in range(12)]
    records[6] = rec(6, member="M2", shown=(), variant="treatment")
    request_log.append(records[::-1])
    got = list(request_log.exposures("exp-1", T0 + timedelta(minutes=1), T0 + timedelta(minutes=10)))
    assert got == [
        ("req-0003", "M3", T0 + timedelta(minutes=3), "control", 2),
        ("req-0006", "M2", T0 + timedelta(minutes=6), "treatment", 0),
        ("req-0009", "M1", T0 + timedelta(minutes=9), "control", 2),
    ]
    assert list(request_log.exposures("exp-2", T0, T0 + timedelta(days=1))) == []
