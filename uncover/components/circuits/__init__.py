"""Circuits (survey §2.2, appendix C.3): the edge graph of any supported model, exact edge patching,
discovery (EAP, EAP-IG, ACDC), circuit selection, faithfulness, completeness and minimality, and causal
scrubbing of a hypothesis (Chan et al. 2022).

    import uncover as uc
    scores = uc.circuits.discover(model, task, method="eap-ig")        # EdgeScores [sources, receivers]
    curve = uc.circuits.faithfulness_curve(model, task, scores)         # faithfulness vs edges kept
    circuit = uc.circuits.select(scores.graph, scores.scores, top_n=500)
    result = uc.circuits.evaluate(model, task, circuit)
    hyp = uc.circuits.Hypothesis(["embed", "L1.H3"], [("embed", "L1.H3"), ("L1.H3", "logits")],
                                 {"L1.H3": uc.circuits.token_at(task.clean, 5)})
    scrubbed = uc.circuits.scrub(model, task, hyp)                      # ScrubResult: .recovered
"""
from uncover.components.circuits.discovery import METHODS, EdgeScores, discover
from uncover.components.circuits.evaluate import (CircuitEval, Completeness, FaithfulnessCurve, completeness, evaluate,
                                                  faithfulness_curve, grow, prune_dangling, roc_auc, select)
from uncover.components.circuits.export import (check_circuit_graph, circuit_dict, to_dot, write_circuit,
                                                write_circuit_graph)
from uncover.components.circuits.graph import Graph
from uncover.components.circuits.patching import ABLATIONS, EdgePatcher
from uncover.components.circuits.scrubbing import Hypothesis, ScrubResult, scrub, token_at, whole_input

__all__ = ["ABLATIONS", "METHODS", "CircuitEval", "Completeness", "EdgePatcher", "EdgeScores", "FaithfulnessCurve", "Graph",
           "Hypothesis", "ScrubResult",
           "check_circuit_graph", "circuit_dict", "completeness", "discover", "evaluate", "faithfulness_curve", "grow",
           "prune_dangling", "roc_auc", "scrub", "select", "to_dot", "token_at", "whole_input", "write_circuit",
           "write_circuit_graph"]
