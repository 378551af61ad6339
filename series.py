"""python series.py data.root=DIR [degrade=NAME] [track=NAME]: a tracker's SCOT on degraded truth
(see conf/series.yaml)."""

import hydra
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the config resolvers)
from sn7.series import series
from sn7.utils.cli import run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="series")
def main(cfg: DictConfig) -> float:
    metrics = run_stage(series, cfg)
    return metrics["mean"]["scot"]


if __name__ == "__main__":
    main()
