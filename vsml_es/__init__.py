"""vsml-es: meta-learn learning algorithms with VSML and evolution strategies."""

__version__ = "0.1.0"
