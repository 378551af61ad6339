"""python prepare.py data.root=DIR: mask cache, manifest, subset, split (conf/prepare.yaml)."""

import hydra
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the config resolvers)
from sn7.prepare import prepare
from sn7.utils.cli import run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_stage(prepare, cfg)


if __name__ == "__main__":
    main()
