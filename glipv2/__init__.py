"""glipv2: GLIPv2-style unified vision-language models, Hugging Face native.

`import glipv2` registers the config, models and processors with transformers' Auto classes, and marks them for
`register_for_auto_class` so that every `save_pretrained` folder also carries the custom code (loadable with
`trust_remote_code=True` where glipv2 is not installed).
"""

from transformers import AutoConfig, AutoModel

from .configuration_glipv2 import PRESETS, Glipv2Config
from .modeling_glipv2 import Glipv2Model, Glipv2ModelOutput, Glipv2PreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(Glipv2Config.model_type, Glipv2Config, exist_ok=True)
AutoModel.register(Glipv2Config, Glipv2Model, exist_ok=True)
Glipv2Config.register_for_auto_class()
Glipv2Model.register_for_auto_class("AutoModel")

__all__ = [
    "PRESETS",
    "Glipv2Config",
    "Glipv2Model",
    "Glipv2ModelOutput",
    "Glipv2PreTrainedModel",
]
