"""Driving a search: checking its input, loading what every trial shares, asking the
optimizer, running trials on Ray, the journal a crashed search resumes from, and the final
evaluation of the front against hand-made baselines."""
