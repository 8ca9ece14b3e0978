"""glipv2: GLIPv2-style unified vision-language models, Hugging Face native.

`import glipv2` registers the config, models and processors with transformers' Auto classes, and marks them for
`register_for_auto_class` so that every `save_pretrained` folder also carries the custom code (loadable with
`trust_remote_code=True` where glipv2 is not installed).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
)
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

from .configuration_glipv2 import PRESETS, Glipv2Config
from .image_processing_glipv2 import Glipv2ImageProcessor
from .modeling_glipv2 import Glipv2Model, Glipv2ModelOutput, Glipv2PreTrainedModel
from .modeling_glipv2_captioning import Glipv2CaptioningOutput, Glipv2ForConditionalGeneration
from .modeling_glipv2_detection import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2GroundingOutput
from .modeling_glipv2_understanding import (
    Glipv2ForPreTraining,
    Glipv2ForQuestionAnswering,
    Glipv2ForZeroShotImageClassification,
    Glipv2PreTrainingOutput,
    Glipv2QuestionAnsweringOutput,
    Glipv2ZeroShotImageClassificationOutput,
    build_zero_shot_classifier,
    classify,
    vqa_targets,
)
from .pipelines_glipv2 import (
    Glipv2OpenVocabularyDetectionPipeline,
    Glipv2PhraseGroundingPipeline,
    detect_labels,
    register_pipelines,
)
from .pipelines_glipv2_vqa import Glipv2VisualQuestionAnsweringPipeline, register_vqa_pipeline
from .processing_glipv2 import Glipv2Processor, Glipv2Prompt

__version__ = "0.1.0"

AutoConfig.register(Glipv2Config.model_type, Glipv2Config, exist_ok=True)
AutoImageProcessor.register(Glipv2Config, slow_image_processor_class=Glipv2ImageProcessor, exist_ok=True)
AutoProcessor.register(Glipv2Config, Glipv2Processor, exist_ok=True)
# transformers infers a "Glipv2VideoProcessor" from the image processor's auto_map and would ask whether to trust
# remote code for it; declaring that glipv2 has no video processor keeps local loading prompt-free.
VIDEO_PROCESSOR_MAPPING.register(Glipv2Config, None, exist_ok=True)
Glipv2Config.register_for_auto_class()
Glipv2ImageProcessor.register_for_auto_class("AutoImageProcessor")
Glipv2Processor.register_for_auto_class("AutoProcessor")

_MODELS = {
    AutoModel: Glipv2Model,
    AutoModelForZeroShotObjectDetection: Glipv2ForGrounding,
    AutoModelForObjectDetection: Glipv2ForObjectDetection,
    AutoModelForVisualQuestionAnswering: Glipv2ForQuestionAnswering,
    AutoModelForImageTextToText: Glipv2ForConditionalGeneration,
    AutoModelForZeroShotImageClassification: Glipv2ForZeroShotImageClassification,
    AutoModelForPreTraining: Glipv2ForPreTraining,
}
for _auto_class, _model_class in _MODELS.items():
    _auto_class.register(Glipv2Config, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_class.__name__)

register_pipelines()
register_vqa_pipeline()

__all__ = [
    "PRESETS",
    "build_zero_shot_classifier",
    "classify",
    "detect_labels",
    "vqa_targets",
    "Glipv2CaptioningOutput",
    "Glipv2ForConditionalGeneration",
    "Glipv2ForPreTraining",
    "Glipv2ForQuestionAnswering",
    "Glipv2ForZeroShotImageClassification",
    "Glipv2PreTrainingOutput",
    "Glipv2QuestionAnsweringOutput",
    "Glipv2VisualQuestionAnsweringPipeline",
    "Glipv2ZeroShotImageClassificationOutput",
    "Glipv2Config",
    "Glipv2ForGrounding",
    "Glipv2ForObjectDetection",
    "Glipv2GroundingOutput",
    "Glipv2ImageProcessor",
    "Glipv2Model",
    "Glipv2ModelOutput",
    "Glipv2PreTrainedModel",
    "Glipv2OpenVocabularyDetectionPipeline",
    "Glipv2PhraseGroundingPipeline",
    "Glipv2Processor",
    "Glipv2Prompt",
]
