"""World models (survey §3.1): Othello-GPT, board-state probes and interventions."""
