"""``mindspore.parallel.nn``: MindSpore 2.x's module path for the pipeline wrappers.

``Pipeline`` is MindSpore's newer name for ``PipelineCell``.

>>> import distinfer as ms
>>> from distinfer.parallel.nn import Pipeline, PipelineCell, PipelineGradReducer
>>> PipelineCell is ms.nn.PipelineCell and Pipeline is PipelineCell and PipelineGradReducer is ms.nn.PipelineGradReducer
True
"""
from ..nn import PipelineCell, PipelineGradReducer

Pipeline = PipelineCell

__all__ = ["PipelineCell", "Pipeline", "PipelineGradReducer"]
