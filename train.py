"""python train.py [overrides]: train a building segmentation model (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the config resolvers)
from sn7.train import train
from sn7.utils.cli import run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_stage(train, cfg)


if __name__ == "__main__":
    main()
