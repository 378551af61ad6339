"""Series harness: a tracker scored by SCOT on degraded truth, AOI by AOI (conf/series.yaml).

Every AOI of data.root with monthly labels_match files is rendered month by month from its truth
(0.95 on buildings, 0.05 elsewhere), degraded (conf/degrade/), tracked (conf/track/) with the
footprints cut at series.threshold, and scored against the true ids. No network runs, so a
tracker's ceiling and its robustness to each kind of error are measured in seconds per AOI.
Writes metrics.json, metrics.md and change_maps/<AOI>.png (false and missed new buildings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from sn7.data.label_series import LabelSeries, discover_label_series
from sn7.errors import ConfigError
from sn7.evaluation.degrade import Degradation
from sn7.evaluation.series import AoiRun, run_aoi
from sn7.evaluation.track_search import candidates_of, search
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.track_choice import TrackChoice
from sn7.inference.tracking import TrackSettings
from sn7.metrics.scot import scot_mean
from sn7.utils.atomic import write_json_atomic, write_text_atomic
from sn7.utils.config import project_root, to_container
from sn7.utils.console import console, print_table
from sn7.utils.markdown import markdown_table
from sn7.viz.change_map import change_errors_map

COLUMNS = ["AOI", "months", "new ids", "SCOT", "tracking", "change", "change TP", "change FP",
           "change FN", "mismatches", "seconds"]  # fmt: skip


@dataclass(frozen=True)
class SeriesSettings:
    """What the harness needs from conf/series.yaml, checked once before any AOI is read."""

    root: Path
    degradation: Degradation
    track: TrackSettings
    footprint: FootprintSettings
    aois: tuple[str, ...] | None
    months: int | tuple[str, ...] | None
    seed: int
    cache_dir: Path
    change_maps: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SeriesSettings:
        s = cfg.series
        aois = s.aois
        if isinstance(aois, str):
            aois = [aois]
        months = s.months
        if isinstance(months, str):
            months = [months]
        if isinstance(months, int) and months < 1:
            raise ConfigError(f"series.months={months} must be >= 1, a list of YYYY-MM, or null")
        track = TrackSettings.from_config(cfg.track)
        # track=auto: the footprints are cut where the tracker was chosen to cut them
        threshold = float(s.threshold) if track.chosen is None else track.chosen.threshold
        return cls(
            root=Path(str(cfg.data.root)),
            degradation=Degradation.from_config(to_container(cfg.degrade)),
            track=track,
            footprint=FootprintSettings(
                threshold, PostSettings.from_config(cfg.post), float(s.min_area)
            ),
            aois=None if aois is None else tuple(str(a) for a in aois),
            months=tuple(_month_name(m) for m in months)
            if isinstance(months, list | tuple | ListConfig)
            else months,
            seed=int(s.seed),
            cache_dir=Path(str(s.cache_dir)),
            change_maps=bool(s.change_maps),
        )

    def chosen(self, found: list[LabelSeries]) -> list[LabelSeries]:
        """The AOIs and months asked for (series.aois, series.months), in date order."""
        names = [s.aoi for s in found]
        if self.aois is not None:
            unknown = sorted(set(self.aois) - set(names))
            if unknown:
                raise ConfigError(f"series.aois: {unknown} not in {self.root} (it has {names})")
            found = [s for s in found if s.aoi in self.aois]
        out = []
        for s in found:
            months = s.months
            if isinstance(self.months, int):
                months = months[: self.months]
            elif self.months is not None:
                months = tuple(m for m in months if m.date in self.months)
            if not months:
                raise ConfigError(f"series.months={list(self.months)}: none of them in {s.aoi}")
            out.append(LabelSeries(s.aoi, s.info, months))
        return out


def _month_name(value) -> str:
    """'2018-07', '2018_07' or 201807 -> '2018-07' (the form ImageFiles.date has)."""
    text = str(value).replace("_", "-")
    if len(text) == 6 and text.isdigit():
        text = f"{text[:4]}-{text[4:]}"
    if len(text) != 7 or text[4] != "-" or not (text[:4] + text[5:]).isdigit():
        raise ConfigError(f"series.months: {value!r} is not a month (YYYY-MM)")
    return text


def series(cfg: DictConfig) -> dict:
    """Run the harness on every chosen AOI (or, with search=track, choose the tracker there);
    write and return the metrics."""
    if cfg.get("search"):
        return run_search(cfg)
    settings = SeriesSettings.from_config(cfg)
    chosen = settings.chosen(discover_label_series(settings.root))
    out_dir = Path(cfg.paths.run_dir)
    runs: list[AoiRun] = []
    for s in chosen:
        console.print(f"{s.aoi}: {len(s.months)} months ...")
        run = run_aoi(s, settings.degradation, settings.track, settings.footprint, settings.seed,
                      settings.cache_dir / s.aoi)  # fmt: skip
        runs.append(run)
        if settings.change_maps:
            change_errors_map(run.truth, run.tracked, run.false_new, run.missed_new, run.shape,
                              out_dir / "change_maps" / f"{s.aoi}.png",
                              title=f"{s.aoi}: change errors")  # fmt: skip
    metrics = assemble(settings, runs)
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "metrics.md", markdown(metrics))
    print_table(_caption(metrics), COLUMNS, table_rows(metrics))
    console.print(f"written to {out_dir}")
    return metrics


def run_search(cfg: DictConfig) -> dict:
    """search=track: every candidate on the chosen AOIs under each degradation; the best is
    stored in search.out (track.json) and the ranking in the run dir's search.md."""
    settings = SeriesSettings.from_config(cfg)
    search_cfg = cfg.search
    degradations = [degradation_named(str(name)) for name in search_cfg.degradations]
    candidates = candidates_of(to_container(search_cfg.tracks), list(search_cfg.thresholds))
    chosen = settings.chosen(discover_label_series(settings.root))
    console.print(
        f"search: {len(candidates)} candidates on {', '.join(s.aoi for s in chosen)} under "
        f"{', '.join(d.name for d in degradations)}"
    )
    choice = search(chosen, degradations, candidates, settings.footprint.post,
                    settings.footprint.min_area, settings.seed, settings.cache_dir,
                    settings.root)  # fmt: skip
    path = choice.save(Path(str(search_cfg.out)))
    write_text_atomic(Path(cfg.paths.run_dir) / "search.md", search_markdown(choice, path))
    columns, rows = search_table(choice)
    print_table("tracker search (selection series)", columns, rows)
    console.print(f"chosen: {_track_text(choice.track)} @ {choice.threshold:.2f}; stored in {path}")
    return {"mean": {"scot": choice.score}, "choice": str(path)}


def search_table(choice: TrackChoice) -> tuple[list[str], list[list]]:
    """The candidates, best first: track (options that differ from its defaults), threshold, mean
    SCOT and the SCOT of each AOI / degradation."""
    ranked = sorted(choice.candidates, key=lambda c: -c["mean_scot"])
    keys = sorted(ranked[0]["scot"])
    rows = [[_track_text(c["track"]), c["threshold"], c["mean_scot"], *[c["scot"][k] for k in keys]]
            for c in ranked]  # fmt: skip
    aois = {k.split("/")[0] for k in keys}
    names = [k.split("/")[-1] if len(aois) == 1 else f"{k[:9]} {k.split('/')[-1]}" for k in keys]
    return ["track", "threshold", "mean SCOT", *names], rows


def search_markdown(choice: TrackChoice, path: Path) -> str:
    columns, rows = search_table(choice)
    return "\n".join([
        "# Tracker search", "",
        f"Chosen: `{_track_text(choice.track)}` at threshold {choice.threshold:.2f}, "
        f"{choice.where()}; stored in `{path}` ({choice.created}). Columns: SCOT per "
        f"AOI / degradation of {', '.join(choice.selected_on.get('aois') or [])}.", "",
        markdown_table(columns, rows, formats={"threshold": ".2f"}), "",
    ])  # fmt: skip


def degradation_named(name: str) -> Degradation:
    path = Path(project_root()) / "conf" / "degrade" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"search.degradations: no conf/degrade/{name}.yaml")
    return Degradation.from_config(to_container(OmegaConf.load(path)))


def _track_text(track: dict) -> str:
    """`mode` and the options that differ from its defaults."""
    defaults = TrackSettings.from_config({"mode": track["mode"]}).options
    changed = [f"{k}={v}" for k, v in track.items() if k != "mode" and defaults.get(k) != v]
    return track["mode"] + (f" ({', '.join(changed)})" if changed else "")


def assemble(settings: SeriesSettings, runs: list[AoiRun]) -> dict:
    per_aoi = {r.aoi: r.as_dict() for r in runs}
    mean = scot_mean({r.aoi: r.scot for r in runs})
    n = len(runs)
    return {
        "data_root": str(settings.root.resolve()),
        "degrade": settings.degradation.as_dict(),
        "track": settings.track.as_dict(),
        "track_chosen": None if settings.track.chosen is None else settings.track.chosen.where(),
        "footprints": settings.footprint.as_dict(),
        "seed": settings.seed,
        "mean": {
            "scot": mean["scot"],
            "tracking": mean["track_score"],
            "change": mean["change_score"],
            "mismatches": sum(r.scot.mismatches for r in runs) / n,
            "change_tp": sum(r.scot.change_tp for r in runs) / n,
            "change_fp": sum(r.scot.change_fp for r in runs) / n,
            "change_fn": sum(r.scot.change_fn for r in runs) / n,
            "n_new": sum(r.n_new for r in runs) / n,
            "seconds": sum(sum(r.seconds.values()) for r in runs) / n,
            "n_aois": n,
        },
        "per_aoi": per_aoi,
    }


def table_rows(metrics: dict) -> list[list]:
    rows = []
    for name, m in [*metrics["per_aoi"].items(), ("mean", metrics["mean"])]:
        months = m.get("n_months", "")
        if m.get("missing_months"):
            months = f"{months} ({len(m['missing_months'])} missing)"
        counts = [_count(m[k]) for k in ("change_tp", "change_fp", "change_fn", "mismatches")]
        rows.append([name, months, _count(m["n_new"]), m["scot"], m["tracking"], m["change"],
                     *counts, m["seconds"]])  # fmt: skip
    return rows


def _count(value) -> int | str:
    """A count, or a mean of counts to one decimal."""
    return value if isinstance(value, int) else f"{value:.1f}"


def _caption(metrics: dict) -> str:
    track = ", ".join(f"{k}={v}" for k, v in metrics["track"].items())
    return (f"series: degrade={metrics['degrade']['name']}, track {track}, "
            f"threshold={metrics['footprints']['threshold']}, seed={metrics['seed']}")  # fmt: skip


def markdown(metrics: dict) -> str:
    """metrics.md: the AOI table, then change TP / FP / FN month by month."""
    steps = metrics["degrade"]["steps"] or "none (truth)"
    chosen = metrics.get("track_chosen")
    lines = [
        "# Series harness",
        "",
        f"{_caption(metrics)}.",
        *([f"Tracker (track=auto) {chosen}.", ""] if chosen else []),
        f"Data root: `{metrics['data_root']}`. Degradation steps: `{steps}`.",
        "",
        markdown_table(COLUMNS, table_rows(metrics), formats={"seconds": ".1f"}),
        "",
        "## Change per month (TP / FP / FN)",
        "",
    ]
    for aoi, m in metrics["per_aoi"].items():
        rows = [[p["month"], p["change_tp"], p["change_fp"], p["change_fn"], p["f1"]]
                for p in m["per_month"]]  # fmt: skip
        lines += [f"### {aoi}", "", markdown_table(["month", "TP", "FP", "FN", "month F1"], rows),
                  ""]  # fmt: skip
    return "\n".join(lines)
