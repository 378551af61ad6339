"""Evaluation only: which data is scored and where thresholds are chosen (scope), scoring a split
AOI by AOI (scoring), and the thresholds chosen on a selection split with their provenance
(thresholds). `sn7.inference` stays model -> probabilities -> footprints -> tracks."""
