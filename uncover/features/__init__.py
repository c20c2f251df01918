"""Features (survey §2.1): toy models of superposition, activation stores, sparse autoencoders and
transcoders (training, evaluation, SAELens format), and feature / neuron dashboards.

    from uncover.features.sae import SAE, SAEConfig
    from uncover.features.training import SAETrainConfig, train_sae
    from uncover.features.evals import evaluate_sae
"""
