"""Evaluators equal to the official ones: ActivityNet detection mAP and proposal AR@AN, 2D-TAN grounding.

Each `evaluate_*` takes in-memory inputs and returns a result whose `to_json()` is the object
`tal evaluate` prints; each `evaluate_*_files` reads the contract files first.
"""
from tal.eval.detection import (ACTIVITYNET_TIOU, THUMOS14_TIOU, DetectionResult, evaluate_detection,
                                evaluate_detection_files)
from tal.eval.grounding import GroundingResult, evaluate_grounding, evaluate_grounding_files
from tal.eval.groundtruth import load_subset, select_subset
from tal.eval.predictions import (GroundingPrediction, SegmentPredictions, parse_grounding_predictions,
                                  parse_segment_predictions, read_grounding_predictions, read_segment_predictions)
from tal.eval.proposals import ProposalResult, evaluate_proposals, evaluate_proposals_files

__all__ = [
    "ACTIVITYNET_TIOU", "THUMOS14_TIOU", "DetectionResult", "evaluate_detection", "evaluate_detection_files",
    "GroundingResult", "evaluate_grounding", "evaluate_grounding_files", "load_subset", "select_subset",
    "GroundingPrediction", "SegmentPredictions", "parse_grounding_predictions", "parse_segment_predictions",
    "read_grounding_predictions", "read_segment_predictions", "ProposalResult", "evaluate_proposals",
    "evaluate_proposals_files",
]
