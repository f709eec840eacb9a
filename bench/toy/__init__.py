"""The toy world (Fashion-MNIST): its models, evaluation and the guidance tradeoff (python -m bench.toy.tradeoff)."""
