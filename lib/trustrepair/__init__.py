"""trustrepair: trace the SFT data that hurt trustworthiness, and repair the model.

Reproduction package for "Trust, But Attribute: Tracing Impact of Data on
Trustworthiness in Supervised LLM Fine-Tuning" (ICLR 2026).
"""

from trustrepair.aspects import ASPECTS
from trustrepair.params import Params, ParamsError, load_params

__all__ = ["ASPECTS", "Params", "ParamsError", "load_params"]
__version__ = "0.1.0"
