"""glipv2: GLIPv2-style unified vision-language models, Hugging Face native.

`import glipv2` registers the config, every task class (`auto_map.TASK_CLASSES`), the processors and this library's
pipelines (`auto_map.PIPELINES`) with transformers' Auto classes and pipeline registry, and marks them for
`register_for_auto_class`, so that every `save_pretrained` folder also carries the custom code (loadable with
`trust_remote_code=True` where glipv2 is not installed).
"""

import logging

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoProcessor
from transformers.models.auto import image_processing_auto as _image_processing_auto
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING
from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

from .auto_map import PIPELINES, TASK_CLASSES, pipeline_class
from .configuration_glipv2 import PRESETS, Glipv2Config
from .image_processing_glipv2 import Glipv2ImageProcessor
from .modeling_glipv2 import Glipv2Model, Glipv2ModelOutput, Glipv2PreTrainedModel
from .modeling_glipv2_captioning import Glipv2CaptioningOutput, Glipv2ForConditionalGeneration
from .modeling_glipv2_detection import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2GroundingOutput
from .modeling_glipv2_pretraining import Glipv2ForPreTraining, Glipv2PreTrainingOutput
from .modeling_glipv2_segmentation import (
    Glipv2ForInstanceSegmentation,
    Glipv2ForSegmentation,
    Glipv2SegmentationOutput,
)
from .modeling_glipv2_vqa import Glipv2ForQuestionAnswering, Glipv2QuestionAnsweringOutput, vqa_targets
from .modeling_glipv2_zero_shot import (
    Glipv2ForZeroShotImageClassification,
    Glipv2ZeroShotImageClassificationOutput,
    build_zero_shot_classifier,
    classify,
)
from .pipelines_glipv2 import (
    Glipv2ObjectDetectionPipeline,
    Glipv2OpenVocabularyDetectionPipeline,
    Glipv2PhraseGroundingPipeline,
    detect_labels,
)
from .pipelines_glipv2_captioning import Glipv2ImageCaptioningPipeline
from .pipelines_glipv2_segmentation import (
    Glipv2ImageSegmentationPipeline,
    Glipv2InstanceSegmentationPipeline,
    Glipv2ReferringSegmentationPipeline,
)
from .pipelines_glipv2_vqa import Glipv2VisualQuestionAnsweringPipeline
from .processing_glipv2 import Glipv2Processor, Glipv2Prompt

__version__ = "0.1.0"

AutoConfig.register(Glipv2Config.model_type, Glipv2Config, exist_ok=True)
AutoImageProcessor.register(Glipv2Config, image_processor_classes={"pil": Glipv2ImageProcessor}, exist_ok=True)
# The image processor has one backend (PIL): Auto loading picks it directly instead of asking for a torchvision
# backend first and warning that it "is not available".
_image_processing_auto.DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS = [
    *_image_processing_auto.DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS,
    Glipv2ImageProcessor.__name__,
]
AutoProcessor.register(Glipv2Config, Glipv2Processor, exist_ok=True)
# transformers infers a "Glipv2VideoProcessor" from the image processor's auto_map and would ask whether to trust
# remote code for it; declaring that glipv2 has no video processor keeps local loading prompt-free.
VIDEO_PROCESSOR_MAPPING.register(Glipv2Config, None, exist_ok=True)
Glipv2Config.register_for_auto_class()
Glipv2ImageProcessor.register_for_auto_class("AutoImageProcessor")
Glipv2Processor.register_for_auto_class("AutoProcessor")

for _entry in TASK_CLASSES:
    _auto_class, _model_class = getattr(transformers, _entry.auto_class), globals()[_entry.name]
    _auto_class.register(Glipv2Config, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_entry.auto_class)

# Registering a task transformers already has (object-detection, image-segmentation) logs an "Overwriting"
# warning on every import.
_pipelines_logger = logging.getLogger("transformers.pipelines.base")
_level = _pipelines_logger.level
_pipelines_logger.setLevel(logging.ERROR)
for _pipeline in PIPELINES:
    # transformers 5 lists some tasks (visual-question-answering) in REMOVED_TASKS and `pipeline()` refuses those
    # names before it looks at the registry: a provider for the task takes it off that list.
    # A stock task this library serves (object-detection) keeps transformers' default model.
    REMOVED_TASKS.pop(_pipeline.task, None)
    # A stock task keeps its model classes too (image-segmentation: semantic segmentation models as well).
    _stock = PIPELINE_REGISTRY.supported_tasks.get(_pipeline.task, {})
    PIPELINE_REGISTRY.register_pipeline(
        _pipeline.task,
        pipeline_class=pipeline_class(_pipeline.task),
        pt_model=_stock.get("pt") or getattr(transformers, _pipeline.auto_class),
        default=_stock.get("default"),
        type=_stock.get("type", _pipeline.type),
    )
_pipelines_logger.setLevel(_level)

__all__ = [
    "PRESETS",
    "build_zero_shot_classifier",
    "classify",
    "detect_labels",
    "vqa_targets",
    "Glipv2CaptioningOutput",
    "Glipv2Config",
    "Glipv2ForConditionalGeneration",
    "Glipv2ForGrounding",
    "Glipv2ForInstanceSegmentation",
    "Glipv2ForObjectDetection",
    "Glipv2ForPreTraining",
    "Glipv2ForQuestionAnswering",
    "Glipv2ForSegmentation",
    "Glipv2ForZeroShotImageClassification",
    "Glipv2GroundingOutput",
    "Glipv2ImageProcessor",
    "Glipv2ImageCaptioningPipeline",
    "Glipv2ImageSegmentationPipeline",
    "Glipv2InstanceSegmentationPipeline",
    "Glipv2Model",
    "Glipv2ModelOutput",
    "Glipv2ObjectDetectionPipeline",
    "Glipv2OpenVocabularyDetectionPipeline",
    "Glipv2PhraseGroundingPipeline",
    "Glipv2PreTrainedModel",
    "Glipv2PreTrainingOutput",
    "Glipv2Processor",
    "Glipv2Prompt",
    "Glipv2QuestionAnsweringOutput",
    "Glipv2ReferringSegmentationPipeline",
    "Glipv2SegmentationOutput",
    "Glipv2VisualQuestionAnsweringPipeline",
    "Glipv2ZeroShotImageClassificationOutput",
]
