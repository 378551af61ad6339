"""python evaluate.py ckpt_path=FILE [overrides]: full-tile metrics (see conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the config resolvers)
from sn7.evaluate import evaluate
from sn7.utils.cli import command_line_keys, run_stage


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    metrics = run_stage(lambda c: evaluate(c, given=command_line_keys()), cfg)
    return metrics["pixel"]["headline"]["iou"]


if __name__ == "__main__":
    main()
