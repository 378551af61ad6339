"""Override strings -> config keys (sn7.utils.cli.override_keys), shared by train and evaluate."""

from __future__ import annotations

from sn7.utils.cli import override_keys


def test_override_keys_strip_prefixes_and_values():
    overrides = ["eval.gallery=0", "+trainer.x=1", "++a.b=c=d", "~eval.threshold", "infer=tta"]
    assert override_keys(overrides) == {
        "eval.gallery",
        "trainer.x",
        "a.b",
        "eval.threshold",
        "infer",
    }
