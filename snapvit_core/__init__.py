"""SnapViT Explorer core library: retraining-free, label-free elastic pruning of Vision Transformers.

Pure Python over torch/timm; never imports streamlit. The main entry points::

    backbone = load_backbone("embedded")
    scores = magnitude_scores(backbone.model)            # or load_scores("scores/x.safetensors")
    elastic = ElasticViT(backbone.model, scores)         # private reordered copy
    small = elastic.prune_to(mlp_sparsity=0.35, head_sparsity=0.2)  # a standalone copy: a value
"""

from snapvit_core._version import __version__
from snapvit_core.data import DataSpec, load_images, load_knn_splits, parse_data_spec, preprocess
from snapvit_core.engine.adapter import ArchitectureShape, ViTAdapter
from snapvit_core.engine.backbones import Backbone, load_backbone
from snapvit_core.engine.correction import CorrectionConfig, CorrectionReport, correct_elastic, correct_pruned_model
from snapvit_core.engine.elastic import ElasticViT, PruningPlan, check_sparsity, plan_keep_counts, plan_pruning
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator, extract_features
from snapvit_core.evaluation.knn import knn_predict, knn_top1
from snapvit_core.evaluation.metrics import (
    LatencyReport,
    analytic_flops,
    count_parameters,
    counted_flops,
    measure_latency,
)
from snapvit_core.explorer import EvaluationResult, Explorer
from snapvit_core.presets import BACKBONE_PRESETS, PUBLISHED_SPARSITY_PAIRS, SEARCH_FITNESS_PAIRS
from snapvit_core.scoring.compute import METHODS as SCORING_METHODS
from snapvit_core.scoring.compute import ScoringConfig, compute_scores
from snapvit_core.scoring.data_free import lamp_scores, magnitude_scores, random_scores
from snapvit_core.scoring.scores import ImportanceScores
from snapvit_core.search.evolution import SearchConfig, SearchResult, run_search

SEARCH_PAIRS = SEARCH_FITNESS_PAIRS  # the earlier name, kept importable

__all__ = [
    "__version__",
    "run_search",
    "SearchConfig",
    "SearchResult",
    "SEARCH_PAIRS",
    "SEARCH_FITNESS_PAIRS",
    "compute_scores",
    "ScoringConfig",
    "SCORING_METHODS",
    "preprocess",
    "parse_data_spec",
    "load_knn_splits",
    "load_images",
    "DataSpec",
    "correct_pruned_model",
    "correct_elastic",
    "CorrectionReport",
    "CorrectionConfig",
    "ArchitectureShape",
    "BACKBONE_PRESETS",
    "Backbone",
    "CancelledError",
    "ElasticViT",
    "EvaluationResult",
    "Explorer",
    "ImportanceScores",
    "KnnEvaluator",
    "LatencyReport",
    "PUBLISHED_SPARSITY_PAIRS",
    "PruningPlan",
    "SnapViTError",
    "ViTAdapter",
    "analytic_flops",
    "check_sparsity",
    "count_parameters",
    "counted_flops",
    "extract_features",
    "knn_predict",
    "knn_top1",
    "lamp_scores",
    "load_backbone",
    "magnitude_scores",
    "measure_latency",
    "plan_keep_counts",
    "plan_pruning",
    "random_scores",
]
