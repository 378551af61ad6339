"""python predict.py ckpt_path=FILE input=PATH: GeoTIFF + GeoJSON output (conf/predict.yaml)."""

import hydra
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the config resolvers)
from sn7.predict import predict
from sn7.utils.cli import command_line_keys, run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_stage(lambda c: predict(c, given=command_line_keys()), cfg)


if __name__ == "__main__":
    main()
