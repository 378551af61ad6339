"""The buildings of one AOI's months with ids that persist across them: what every tracker
returns, SCOT scores and predict writes. Polygons are in pixel coordinates (x = column, y = row)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry

Building = tuple[int, BaseGeometry]  # (building id, footprint in pixel coordinates)


@dataclass
class TrackedMonths:
    """Buildings of each month of one AOI, months in chronological order.

    `first_seen` is derived from the ids (the first month an id occurs), so it means exactly what
    SCOT sees in a submission: with `track_none`, id 3 of month 5 "was seen" in month 0.
    """

    months: list[list[Building]]
    first_seen: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.first_seen = {}
        for t, buildings in enumerate(self.months):
            for building_id, _ in buildings:
                self.first_seen.setdefault(building_id, t)

    def __len__(self) -> int:
        return len(self.months)

    def ids(self, month: int) -> list[int]:
        return [i for i, _ in self.months[month]]

    def polygons(self, month: int) -> list[BaseGeometry]:
        return [p for _, p in self.months[month]]

    def is_new(self, month: int) -> list[bool]:
        """Per building of `month`: does it appear for the first time there? Never in month 0,
        where everything is already standing."""
        return [month > 0 and self.first_seen[i] == month for i in self.ids(month)]

    @classmethod
    def of_truth(cls, months) -> TrackedMonths:
        """True buildings as tracks: each month an object with parallel `ids` and `geoms`."""
        return cls([list(zip(m.ids, m.geoms, strict=True)) for m in months])

    def footprints(self) -> dict[int, BaseGeometry]:
        """Each id's latest footprint (for pictures that show every building once)."""
        return {i: p for buildings in self.months for i, p in buildings}
