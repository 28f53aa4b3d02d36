"""The paper's reported numbers, as data to set our reproduction beside.

Transcribed from the paper's Table 1 (Pre-SFT, Post-SFT and repaired log-odds F_j and
perplexity, with the relative change 100 · (Post − Ours) / |Post|), Table 2 (repair with one
common subset) and Table 4 (appendix C: random subset vs ours). Relative changes are in
percent and positive means lower, i.e. better; a perplexity change is negative when it rises.
"""

from __future__ import annotations

import pandas as pd

MODELS = ("Pythia-1.4B", "Pythia-2.8B", "Pythia-6.9B", "Qwen2.5-1.5B", "Qwen2.5-3B",
          "Qwen2.5-7B")
"""The paper's six models, in its row order."""

_TABLE1_COLUMNS = ["pre_sft_logodds", "pre_sft_ppl", "post_sft_logodds", "post_sft_ppl",
                   "ours_logodds", "ours_ppl", "rel_change_logodds", "rel_change_ppl"]
_TABLE1 = {  # one row per model in MODELS order, columns as _TABLE1_COLUMNS
    "truthfulness": [
        (0.429, 7.005, 0.512, 6.016, 0.476, 6.059, 7.0, -0.7),
        (0.460, 6.431, 0.519, 5.546, 0.476, 5.666, 8.3, -2.2),
        (0.501, 6.142, 0.517, 5.450, 0.493, 5.518, 4.6, -1.3),
        (0.620, 6.665, 0.611, 5.646, 0.604, 5.717, 1.2, -1.3),
        (0.734, 6.459, 0.764, 5.380, 0.739, 5.508, 3.3, -2.4),
        (0.700, 6.247, 0.732, 5.401, 0.662, 5.419, 9.6, -0.3)],
    "machine_ethics": [
        (-0.144, 7.005, -0.210, 6.016, -0.215, 6.055, 2.4, -0.6),
        (-0.111, 6.431, -0.163, 5.546, -0.165, 5.597, 1.2, -0.9),
        (-0.158, 6.142, -0.181, 5.450, -0.180, 5.520, -0.6, -1.3),
        (-0.236, 6.665, -0.261, 5.646, -0.267, 5.671, 2.3, -0.4),
        (-0.227, 6.459, -0.258, 5.380, -0.279, 5.435, 8.1, -1.0),
        (-0.241, 6.247, -0.253, 5.401, -0.275, 5.506, 8.7, -1.9)],
    "stereotypical_bias": [
        (-0.268, 7.005, -0.484, 6.016, -0.549, 6.065, 13.4, -0.8),
        (-0.285, 6.431, -0.433, 5.546, -0.485, 5.613, 12.0, -1.2),
        (-0.255, 6.142, -0.380, 5.450, -0.449, 5.492, 18.2, -0.8),
        (-0.768, 6.665, -0.741, 5.646, -0.801, 5.653, 8.1, -0.1),
        (-0.778, 6.459, -0.734, 5.380, -0.812, 5.385, 10.6, -0.1),
        (-0.792, 6.247, -0.691, 5.401, -0.780, 5.408, 12.9, -0.1)],
}
TABLE1 = pd.DataFrame(
    [{"aspect": aspect, "model": model, **dict(zip(_TABLE1_COLUMNS, row, strict=True))}
     for aspect, rows in _TABLE1.items() for model, row in zip(MODELS, rows, strict=True)])

_TABLE2 = {  # Pythia-1.4B, 2.8B, 6.9B: log-odds change per aspect, then perplexity change
    "truthfulness": (3.52, -0.58, 2.90),
    "machine_ethics": (4.76, 0.61, 5.52),
    "stereotypical_bias": (13.02, 12.24, 19.74),
}
_TABLE2_PPL = (-0.75, -1.01, -0.68)
TABLE2 = pd.DataFrame(
    [{"model": model, "aspect": aspect, "rel_change_logodds": values[i],
      "rel_change_ppl": _TABLE2_PPL[i]}
     for i, model in enumerate(MODELS[:3]) for aspect, values in _TABLE2.items()])

_TABLE4 = {  # per model in MODELS order: random log-odds, random ppl, ours log-odds, ours ppl
    "truthfulness": [(0.2, -1.3, 7.0, -0.7), (-2.7, -8.0, 8.3, -2.2), (-3.7, -2.2, 4.6, -1.2),
                     (0.0, -0.8, 1.1, -1.3), (-0.5, -0.4, 3.3, -2.4), (-0.3, -0.7, 9.6, -0.3)],
    "machine_ethics": [(-4.3, -9.6, 2.4, -0.6), (-2.5, -17.3, 1.2, -0.9),
                       (-3.9, -26.2, -0.6, -1.3), (-0.8, -0.8, 2.3, -0.4),
                       (0.0, -0.7, 8.1, -1.0), (0.4, -10.8, 8.7, -1.9)],
    "stereotypical_bias": [(-4.5, -1.3, 13.4, -0.8), (-3.9, -2.3, 12.0, -1.2),
                           (-0.3, -2.2, 18.2, -0.8), (0.0, -0.1, 8.1, -0.1),
                           (0.3, -0.1, 10.6, -0.1), (0.1, -0.1, 12.9, -0.1)],
}
TABLE4 = pd.DataFrame(
    [{"aspect": aspect, "model": model, "method": method, "rel_change_logodds": logodds,
      "rel_change_ppl": ppl}
     for aspect, rows in _TABLE4.items() for model, row in zip(MODELS, rows, strict=True)
     for method, (logodds, ppl) in (("random", row[:2]), ("ours", row[2:]))])
