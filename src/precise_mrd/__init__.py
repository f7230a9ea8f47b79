"""Precise MRD: tumour-informed minimal residual disease detection from UMI-tagged cfDNA reads.

Layers (imports point down only): ``cli`` > ``service`` > ``pipeline`` > ``io`` > ``core``.
"""

__version__ = "0.1.0"
